// nccl_no_gpu_test.ts: with a build that has NCCL (the CUDA build, tools/check_cuda_build.sh) on a machine without a
// GPU, two ranks of bench/nccl_allreduce.ts must meet at the rendezvous (rank 0 hosts the TCPStore) and then both
// refuse with the NCCL backend's own message. This is the part of a multi-GPU start that can run without a GPU: with
// libtorch 2.x's default libuv store server, rank 0 crashed inside Deno (SIGSEGV in uv_listen, see native/src/dist.cpp).
// Ignored where NCCL is not built (Debian's CPU libtorch) or where a GPU is usable (bench/device.sh runs it for real).
import { cudaIsAvailable, ProcessGroup } from "../src/torch/mod.ts";
import { assert, assertEquals } from "./helpers.ts";

const script = new URL("../bench/nccl_allreduce.ts", import.meta.url).pathname;

Deno.test({
  name: "NCCL without a GPU: both ranks meet at the store, then refuse with one clear error each",
  ignore: !ProcessGroup.available("nccl") || cudaIsAvailable(),
  async fn() {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-all", "--unstable-ffi", script, "--mb", "1", "--timeout", "30"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assertEquals(output.code, 1, `exit status (stderr: ${stderr.slice(-2000)})`);
    assert(stderr.includes("ranks exited 1, 1"), `both ranks should fail by themselves, not crash: ${stderr}`);
    for (const rank of [0, 1]) {
      const refusal = `could not form on rank ${rank} of 2: the NCCL backend needs a CUDA device and none is visible`;
      assert(stderr.includes(refusal), `rank ${rank} should pass the rendezvous and refuse: ${stderr.slice(-2000)}`);
    }
  },
});
