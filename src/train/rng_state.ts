// rng_state.ts: the random generators' states in a training checkpoint, so that a resumed run draws what an
// uninterrupted one would have drawn (dropout-free models still draw: the synthetic data and, on CUDA, any op that
// samples). `rng.cpu` holds the CPU generator; `rng.cuda` the generator of the CUDA device the run trains on, written
// only by CUDA runs. The CUDA key carries no device index, so a run resumed on another GPU (or as another local rank)
// restores it there. A checkpoint from a CPU run has no `rng.cuda`: resumed on CUDA, that generator keeps the seed the
// run set. A CUDA state resumed on the CPU has no generator to go to and is left alone. Only rank 0 writes
// checkpoints, so these are rank 0's states (every rank seeds with seed + rank; other ranks' draws are not restored).
import { type Device, rngState, setRngState, type Tensor } from "../torch/mod.ts";

export const RNG_CPU_KEY = "rng.cpu";
export const RNG_CUDA_KEY = "rng.cuda";

/** Reads one device's generator state (a uint8 tensor); rngState unless a test stands in for a GPU. */
export type RngReader = (device: Device) => Tensor;
/** Sets one device's generator state; setRngState unless a test stands in for a GPU. */
export type RngWriter = (state: Tensor, device: Device) => void;

/** A generator state that cannot be restored: names the checkpoint key and what it held. */
export class RngStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RngStateError";
  }
}

/** The checkpoint entries for a run on `device`: rng.cpu always, rng.cuda on CUDA. New tensors: the caller frees. */
export function captureRngStates(device: Device, read: RngReader = rngState): Map<string, Tensor> {
  const states = new Map<string, Tensor>([[RNG_CPU_KEY, read("cpu")]]);
  if (device !== "cpu") states.set(RNG_CUDA_KEY, read(device));
  return states;
}

/**
 * Restores the generator states found among a checkpoint's tensors for a run on `device`, and returns the keys it
 * restored. A state must be a 1-D uint8 tensor (what libtorch's get_state returns); its length is checked by libtorch,
 * whose message then says which generator refused it.
 */
export function restoreRngStates(
  tensors: ReadonlyMap<string, Tensor>,
  device: Device,
  write: RngWriter = setRngState,
): string[] {
  const restored: string[] = [];
  const targets: [string, Device | null][] = [[RNG_CPU_KEY, "cpu"], [RNG_CUDA_KEY, device === "cpu" ? null : device]];
  for (const [key, target] of targets) {
    const state = tensors.get(key);
    if (state === undefined || target === null) continue;
    if (state.dtype !== "uint8" || state.ndim !== 1) {
      throw new RngStateError(
        `checkpoint entry ${key}: a generator state is a 1-D uint8 tensor, got ${state.dtype} (${state.shape})`,
      );
    }
    write(state, target);
    restored.push(key);
  }
  return restored;
}
