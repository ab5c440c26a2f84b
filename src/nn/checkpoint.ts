// checkpoint.ts: activation (gradient) checkpointing by hand, as llm.c-style segment-wise backward. libtorch C++ has no
// torch.utils.checkpoint, and the usual construction (a custom autograd Function whose backward re-runs the blocks)
// would have libtorch's engine call back into JavaScript: on CUDA its backward runs on the engine's device threads,
// where a Deno FFI callback cannot run (and a thread-safe one would wait for the very event loop that backward blocks).
// So the recomputation is driven from TypeScript, outside the engine:
//
// - forward: a checkpointed stack of blocks runs under no_grad; only each block's input is kept. Its output re-enters
//   the graph as a fresh leaf that requires grad, standing for the whole stack.
// - backward: `loss.backward()` fills the leaves' .grad; then the segments are visited in reverse order of creation
//   (a topological order: a segment can only read segments made before it). For each, block i is re-run with grad from
//   its kept input and backward is called on its output with the incoming gradient, from the last block to the first;
//   the gradient of the stack's input is then sent into the rest of the graph (`input.backward(g)`), which may reach the
//   leaf of an earlier segment.
//
// What it trades: every block's forward runs twice, and the graph outside the segments (norms, heads, losses) is kept
// until the last segment is done (retain_graph: the input of one segment may share nodes with the loss's graph, e.g. the
// student's final norm feeds both the decoder and the CLIP head). That part is small beside 12–24 blocks of attention
// and MLP activations. Parameter gradients are the same sums, taken in another order (docs/training.md).
import { isGradEnabled, keep, noGrad, type Tensor, tidy } from "../torch/mod.ts";

/** One block of a checkpointed stack: input (B, N, D) -> output (B, N, D); `context` are the stack's extra tensors. */
export type CheckpointedLayer = (h: Tensor, ...context: Tensor[]) => Tensor;

/** Runs fn in the numeric context of the forward (autocast, for instance), so that a recomputation repeats it. */
export type RecomputeContext = <T>(fn: () => T) => T;

interface Segment {
  layers: CheckpointedLayer[];
  /** The stack's input as the graph sees it (a handle owned here); its backward continues the graph before the stack. */
  input: Tensor;
  /** inputs[i]: block i's input, detached (inputs[0] is `input` detached). */
  inputs: Tensor[];
  context: Tensor[];
  /** The leaf that stands for the stack's output in the graph after it. */
  output: Tensor;
}

/** The checkpointed stacks of one forward, and the backward that recomputes them. */
export class ActivationCheckpoints {
  #segments: Segment[] = [];

  constructor(readonly recomputeContext: RecomputeContext = (fn) => fn()) {}

  /** Stacks recorded since the last backward or clear. */
  get segmentCount(): number {
    return this.#segments.length;
  }

  /**
   * x: (B, N, D) -> the output of layers applied in order, as a leaf that requires grad; no block activation is
   * kept. `context` (a mask, say) is held until backward; null entries are passed through as they are.
   */
  sequential(x: Tensor, layers: CheckpointedLayer[], context: Tensor[] = []): Tensor {
    if (layers.length === 0) return x.alias();
    const inputs: Tensor[] = [];
    const ownedContext = context.map((t) => keep(t.alias()));
    let h = keep(x.detach());
    try {
      for (const layer of layers) {
        inputs.push(h);
        h = keep(noGrad(() => tidy(() => layer(inputs[inputs.length - 1], ...ownedContext))));
      }
    } catch (error) {
      for (const t of [...inputs, ...ownedContext]) t.dispose();
      if (!inputs.includes(h)) h.dispose();
      throw error;
    }
    // The output leaf: a detached handle of the last block's result, now needing grad.
    const output = keep(h.requiresGrad_(true));
    this.#segments.push({ layers, input: keep(x.alias()), inputs, context: ownedContext, output });
    return output.alias();
  }

  /**
   * loss.backward() through the recorded stacks (gradient: as Tensor.backward's). Accumulates into the parameters'
   * .grad exactly what loss.backward() without checkpointing would, then forgets the stacks.
   */
  backward(loss: Tensor, gradient?: Tensor): void {
    try {
      const segments = this.#segments;
      loss.backward(gradient, segments.length > 0);
      for (let s = segments.length - 1; s >= 0; s--) {
        const segment = segments[s];
        let grad = segment.output.grad; // (B, N, D), or null when nothing after the stack reached the loss
        if (grad === null) continue;
        for (let i = segment.layers.length - 1; i >= 0; i--) {
          const input = segment.inputs[i];
          const next: Tensor = tidy(() => {
            const leaf = input.detach().requiresGrad_(true); // leaf: (B, N, D)
            const out = this.recomputeContext(() => segment.layers[i](leaf, ...segment.context));
            out.backward(grad!);
            const inputGrad = leaf.grad; // (B, N, D)
            if (inputGrad === null) throw new Error(`checkpointed block ${i}: its output does not depend on its input`);
            return keep(inputGrad);
          });
          grad.dispose();
          input.dispose(); // block i's input is needed no more
          grad = next;
        }
        if (segment.input.requiresGrad) segment.input.backward(grad, s > 0);
        grad.dispose();
      }
    } finally {
      this.clear();
    }
  }

  /** Drops the recorded stacks without a backward (an evaluation forward, or a failed step). */
  clear(): void {
    for (const segment of this.#segments) {
      for (const t of [segment.input, ...segment.inputs, ...segment.context, segment.output]) t.dispose();
    }
    this.#segments = [];
  }
}

let active: ActivationCheckpoints | null = null;

/** Runs fn with `checkpoints` collecting the checkpointed stacks of the models it runs (null: none, as without). */
export function withCheckpoints<T>(checkpoints: ActivationCheckpoints | null, fn: () => T): T {
  const previous = active;
  active = checkpoints;
  try {
    return fn();
  } finally {
    active = previous;
  }
}

/** The checkpoints a model's block stack should record into now: null outside withCheckpoints or under no_grad. */
export function activeCheckpoints(): ActivationCheckpoints | null {
  return active !== null && isGradEnabled() ? active : null;
}
