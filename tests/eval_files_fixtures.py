# eval_files_fixtures.py: writes the evaluation-file fixtures of tests/eval_files_test.ts with the reference
# implementations (numpy's np.save, Python's pickle and tarfile, torchvision's own readers), so the TypeScript
# readers are checked against files and pixels someone else produced. Usage: eval_files_fixtures.py SPEC.json, where
# the spec names an output folder and what to write there; it prints "ok".
import gzip
import json
import os
import pickle
import struct
import sys
import tarfile

import numpy as np


def npy_cases(out):
    os.makedirs(out, exist_ok=True)
    np.save(f"{out}/unicode.npy", np.array(["a.png", "h\u00e9llo/\u65e5\u672c.jpg", ""]))
    np.save(f"{out}/bytes.npy", np.array([b"x", b"yz"]))
    np.save(f"{out}/int8.npy", np.array([-1, 2, 127], dtype=np.int8))
    np.save(f"{out}/uint16_be.npy", np.array([1, 513], dtype=">u2"))
    np.save(f"{out}/int64.npy", np.array([0, 2**40, -3], dtype=np.int64))
    np.save(f"{out}/column.npy", np.array([[4], [5]], dtype=np.int32))
    np.save(f"{out}/object.npy", np.array(["a", 1], dtype=object), allow_pickle=True)
    np.save(f"{out}/matrix.npy", np.zeros((2, 2), dtype=np.int32))
    np.save(f"{out}/float.npy", np.zeros(3, dtype=np.float32))


def py2_cifar_pickle(data, labels):
    """The byte layout of the real CIFAR-10 batches (Python 2 cPickle, protocol 2): str keys as SHORT_BINSTRING,
    the array through numpy.core.multiarray._reconstruct with its raw bytes as BINSTRING."""
    n = data.shape[0]
    b = b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04"
    b += b"K\x00\x85U\x01b\x87Rq\x05(K\x01M" + struct.pack("<H", n) + b"M\x00\x0c\x86"
    b += b"cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    raw = data.tobytes()
    b += b"\x89T" + struct.pack("<i", len(raw)) + raw + b"tbU\x06labelsq\x08](" + b"".join(
        b"K" + bytes([v]) for v in labels) + b"eU\x0bbatch_labelq\tU\x0ftesting batch 1u."
    back = pickle.loads(b, encoding="latin1")
    assert np.array_equal(back["data"], data) and back["labels"] == labels, "hand-built pickle does not round-trip"
    return b


def cifar_cases(root, rng):
    os.makedirs(f"{root}/cifar10/cifar-10-batches-py", exist_ok=True)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    labels = [3, 0, 9, 3, 1]
    with open(f"{root}/cifar10/cifar-10-batches-py/test_batch", "wb") as f:
        f.write(py2_cifar_pickle(data, labels))
    with open(f"{root}/cifar10/cifar-10-batches-py/batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"], "num_cases_per_batch": 10000}, f, protocol=2)
    os.makedirs(f"{root}/cifar100/cifar-100-python", exist_ok=True)
    data100 = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(f"{root}/cifar100/cifar-100-python/test", "wb") as f:  # Python 3 at protocol 2: _codecs.encode bytes
        pickle.dump({"data": data100, "fine_labels": [99, 0, 42, 7], "coarse_labels": [1, 2, 3, 4]}, f, protocol=2)
    with open(f"{root}/cifar100/cifar-100-python/meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f, protocol=4)
    # What torchvision's CIFAR10/CIFAR100 hold after __init__: (N, 32, 32, 3).
    for name, rel, key in [("cifar10", "cifar-10-batches-py/test_batch", "labels"),
                           ("cifar100", "cifar-100-python/test", "fine_labels")]:
        with open(f"{root}/{name}/{rel}", "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        hwc = np.vstack([entry["data"]]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        np.ascontiguousarray(hwc).tofile(f"{root}/{name}.expected")
        with open(f"{root}/{name}.labels.json", "w") as f:
            json.dump(entry[key], f)
    with open(f"{root}/protocol4.pkl", "wb") as f:
        pickle.dump({"data": np.arange(12, dtype=np.int64).reshape(3, 4), "labels": [1, 2, 3]}, f, protocol=4)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    with open(f"{root}/evil.pkl", "wb") as f:
        pickle.dump({"data": Evil()}, f, protocol=2)


def stl_cases(root, rng):
    from torchvision.datasets import STL10
    os.makedirs(f"{root}/stl10/stl10_binary", exist_ok=True)
    rng.integers(0, 256, 3 * 3 * 96 * 96, dtype=np.uint8).tofile(f"{root}/stl10/stl10_binary/test_X.bin")
    np.array([1, 10, 4], dtype=np.uint8).tofile(f"{root}/stl10/stl10_binary/test_y.bin")
    stl = STL10.__new__(STL10)  # torchvision's own reader, without its download/integrity check
    stl.root = f"{root}/stl10"
    images, labels = stl._STL10__loadfile("test_X.bin", "test_y.bin")
    np.ascontiguousarray(np.transpose(images, (0, 2, 3, 1))).tofile(f"{root}/stl10.expected")
    with open(f"{root}/stl10.labels.json", "w") as f:
        json.dump([int(v) for v in labels], f)


def mnist_cases(root, rng):
    from torchvision.datasets.mnist import read_image_file, read_label_file
    raw = f"{root}/mnist/MNIST/raw"
    os.makedirs(raw, exist_ok=True)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    with open(f"{raw}/t10k-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 3, 28, 28) + images.tobytes())
    with open(f"{raw}/t10k-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, 3) + bytes([7, 0, 2]))
    read_image_file(f"{raw}/t10k-images-idx3-ubyte").numpy().tofile(f"{root}/mnist.expected")
    with open(f"{root}/mnist.labels.json", "w") as f:
        json.dump(read_label_file(f"{raw}/t10k-labels-idx1-ubyte").tolist(), f)
    # Leave the images gzipped only (as the download does before extraction), the labels plain.
    with open(f"{raw}/t10k-images-idx3-ubyte", "rb") as src, gzip.open(f"{raw}/t10k-images-idx3-ubyte.gz", "wb") as dst:
        dst.write(src.read())
    os.remove(f"{raw}/t10k-images-idx3-ubyte")


def main():
    spec = json.load(open(sys.argv[1]))
    out = spec["out"]
    rng = np.random.default_rng(0)
    npy_cases(f"{out}/npy")
    cifar_cases(f"{out}/special", rng)
    stl_cases(f"{out}/special", rng)
    mnist_cases(f"{out}/special", rng)
    for fl in spec.get("filelists", []):
        os.makedirs(fl["dir"], exist_ok=True)
        np.save(f"{fl['dir']}/{fl['split']}_images.npy", np.array(fl["images"]))
        labels = np.array(fl["labels"]) if isinstance(fl["labels"][0], str) else np.array(fl["labels"], np.int64)
        np.save(f"{fl['dir']}/{fl['split']}_labels.npy", labels)
    for t in spec.get("tars", []):
        with tarfile.open(t["path"], "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, path in t["members"]:
                tar.add(path, arcname=name)
    print("ok")


main()
