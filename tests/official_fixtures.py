# official_fixtures.py: writes official-format DetailCLIP checkpoints with Debian's python3-torch for
# tests/official_checkpoint_test.ts, the way the official main.py saves them (docs/training.md#checkpoints-and-resume):
# torch.save of {epoch, state_dict (DDP `module.` keys, last_layer2 sharing last_layer's tensors), optimizer
# (torch.optim.AdamW state_dict over the official two parameter groups), scaler, best_acc, args (argparse.Namespace)}.
# safetensors files are read with json + struct (no safetensors package).
#
#   golden WEIGHTS META OUT.pt ORDER.json from tests/fixtures/golden/tiny: weights.safetensors + meta.json (args.model 'tiny');
#                                         some tensors are saved as strided views (a transpose, an offset slice) and
#                                         the optimizer state comes from one real AdamW step over the trainable
#                                         parameters in ORDER.json's order (named_parameters order; the golden files
#                                         list names sorted, so the test passes the model's registration order)
#   from-ours CKPT.safetensors OUT.pt EPOCH   one of our training checkpoints converted (weights, AdamW moments in the
#                                         official order, args.model = its model_config.name)
#   hostile OUT.pt MARKER                 a torch.save file whose unpickling would call os.system('touch MARKER')
import argparse
import collections
import json
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    metadata = header.pop("__metadata__", {})
    out = collections.OrderedDict()
    for name, entry in header.items():  # json keeps the header's order
        begin, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        raw = bytearray(data[base + begin:base + end])
        out[name] = (torch.frombuffer(raw, dtype=dtype).reshape(entry["shape"]) if end > begin
                     else torch.zeros(entry["shape"], dtype=dtype))
    return out, metadata


def official_groups(names_shapes):
    """main.py's grouping over trainable parameters (DDP names): decay first, then no decay."""
    decay, no_decay = [], []
    for name, shape in names_shapes:
        full = "module." + name
        if len(shape) < 2 or "bias" in full or "ln" in full or "bn" in full:
            no_decay.append(name)
        else:
            decay.append(name)
    return decay, no_decay


def optimizer_state(groups, moments, step, wd):
    """torch.optim.AdamW.state_dict() layout: state by running index over the groups, then the groups."""
    state, param_groups, index = {}, [], 0
    for names, decay in zip(groups, (wd, 0.0)):
        ids = []
        for name in names:
            exp_avg, exp_avg_sq = moments[name]
            state[index] = {"step": torch.tensor(float(step)), "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
            ids.append(index)
            index += 1
        param_groups.append({"lr": 5e-4, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": decay, "amsgrad": False,
                             "foreach": None, "maximize": False, "capturable": False, "params": ids})
    return {"state": state, "param_groups": param_groups}


def namespace(**overrides):
    args = argparse.Namespace(model="DetailCLIP_VITB16", dataset="yfcc15m", metadata="yfcc15m.pkl", root="",
                              output_dir="./output", mask_ratio=0.5, momentum_ema=0.996, epochs=25,
                              warmup_epochs=1, batch_size=64, lr=5e-4, base_lr=3e-3, lr_start=1e-6, lr_end=1e-5,
                              update_freq=1, wd=0.5, betas=(0.9, 0.98), eps=1e-8, eval_freq=1, disable_amp=False,
                              resume="", start_epoch=0, print_freq=10, workers=10, seed=0, gpu=None,
                              clip_loss_weight=1.0, reconst_loss_weight=1.0, ibot_patch_loss_weight=1.0,
                              ibot_cls_loss_weight=1.0, disable_norm_pix_loss=False, world_size=8)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def with_metadata(state_dict):
    """Module.state_dict() returns an OrderedDict carrying `_metadata` (module versions), pickled with BUILD."""
    state_dict._metadata = collections.OrderedDict([("", {"version": 1}), ("visual", {"version": 1})])
    return state_dict


def save(out, state_dict, optimizer, epoch, args):
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 7}
    torch.save({"epoch": epoch, "state_dict": with_metadata(state_dict), "optimizer": optimizer, "scaler": scaler,
                "best_acc": 12.5, "args": args}, out)


def golden(weights_path, meta_path, out, order_path):
    weights, _ = read_safetensors(weights_path)
    meta = json.load(open(meta_path))
    state_dict = collections.OrderedDict()
    for name, tensor in weights.items():
        state_dict["module." + name] = tensor.clone()
    # Strided views, saved as such: a transposed layout and an offset slice of a larger storage.
    key = "module.visual.blocks.0.attn.qkv.weight"
    w = state_dict[key]
    state_dict[key] = w.t().contiguous().t()
    assert not state_dict[key].is_contiguous()
    key = "module.token_embedding.weight"
    w = state_dict[key]
    big = torch.cat([torch.full((3, w.shape[1]), 7.0), w], 0)
    state_dict[key] = big[3:]
    assert state_dict[key].storage_offset() > 0
    # The head is shared: last_layer2 is the same module, so its tensors are the same objects (one storage each).
    for name in list(state_dict):
        if ".last_layer2." in name:
            state_dict[name] = state_dict[name.replace(".last_layer2.", ".last_layer.")]
    order = json.load(open(order_path))
    assert sorted(order) == sorted(meta["trainable"]), "ORDER.json must list exactly meta.json's trainable names"
    trainable = [(name, tuple(weights[name].shape)) for name in order]
    groups = official_groups(trainable)
    params = {name: torch.nn.Parameter(weights[name].clone()) for name, _ in trainable}
    opt = torch.optim.AdamW([{"params": [params[n] for n in groups[0]], "weight_decay": 0.5},
                             {"params": [params[n] for n in groups[1]], "weight_decay": 0.0}],
                            lr=5e-4, betas=(0.9, 0.98), eps=1e-8)
    gen = torch.Generator().manual_seed(0)
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    save(out, state_dict, opt.state_dict(), 3, namespace(model="tiny"))


def from_ours(ckpt_path, out, epoch):
    tensors, metadata = read_safetensors(ckpt_path)
    meta = json.loads(metadata["meta"])
    state_dict = collections.OrderedDict()
    moments, order = {}, []
    for key, tensor in tensors.items():
        if key.startswith("model."):
            state_dict["module." + key[len("model."):]] = tensor
        elif key.startswith("optimizer.") and key.endswith(".exp_avg"):
            name = key[len("optimizer."):-len(".exp_avg")]
            moments[name] = (tensor, tensors["optimizer." + name + ".exp_avg_sq"])
            order.append(name)
    trainable = [(name, tuple(tensors["model." + name].shape)) for name in order]
    groups = official_groups(trainable)
    optimizer = optimizer_state(groups, moments, meta["optimizer_steps"], meta["options"]["wd"])
    save(out, state_dict, optimizer, epoch, namespace(model=meta["model_config"]["name"]))


class Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def main():
    command = sys.argv[1]
    if command == "golden":
        golden(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif command == "from-ours":
        from_ours(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif command == "hostile":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "args": Hostile(sys.argv[3])}, sys.argv[2])
    else:
        raise SystemExit(f"unknown command {command}")
    print("ok")


if __name__ == "__main__":
    main()
