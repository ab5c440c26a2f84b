// memory_test.ts: native handle lifetimes, read through the library's live-handle counter. Scopes free what they do
// not return, disposal is idempotent and safe, and a training-like loop does not grow the count.
import { F, keep, liveTensors, noGrad, Tensor, tidy, TorchError } from "../src/torch/mod.ts";
import { assert, assertClose, assertEquals, assertThrows, assertTorchError } from "./helpers.ts";

/** Asserts that fn leaves the live-handle count where it found it. */
function balanced(name: string, fn: () => void): void {
  const before = liveTensors();
  fn();
  assertEquals(liveTensors(), before, `${name}: live handles`);
}

Deno.test("tidy frees everything but the returned tensor", () => {
  balanced("tidy", () => {
    const before = liveTensors();
    const result = tidy(() => {
      const a = Tensor.ones([4]);
      const b = a.mul(2).add(1);
      const c = b.exp();
      assertEquals(liveTensors(), before + 4);
      return c.sum();
    });
    assertEquals(liveTensors(), before + 1);
    assertClose(result.item(), 4 * Math.exp(3), { rtol: 1e-6 });
    result.dispose();
  });
});

Deno.test("tidy frees multi-output ops (chunk, split, sort, max) it does not return", () => {
  balanced("multi-output", () => {
    const before = liveTensors();
    const kept = tidy(() => {
      const x = Tensor.arange(0, 10, 1, { dtype: "float32" });
      x.chunk(3);
      x.split(4);
      x.sort(0, { descending: true });
      x.topk(2);
      x.reshape([2, 5]).max(1);
      return x.chunk(2)[1];
    });
    assertEquals(liveTensors(), before + 1);
    assertEquals(kept.toArray(), [5, 6, 7, 8, 9]);
    kept.dispose();
  });
});

Deno.test("nested tidies: the inner result moves to the outer scope and is freed there", () => {
  balanced("nested", () => {
    const before = liveTensors();
    const outer = tidy(() => {
      const fromInner = tidy(() => {
        const t = Tensor.full([3], 2);
        return t.mul(t); // t freed here, the product survives into the outer scope
      });
      assertEquals(liveTensors(), before + 1);
      const unused = tidy(() => Tensor.ones([2])); // survives the inner scope, freed by the outer
      assertEquals(unused.disposed, false);
      const sum = fromInner.sum();
      assertEquals(liveTensors(), before + 3);
      return { sum, peek: () => unused };
    });
    // only `sum` survives; `fromInner` and `unused` were freed by the outer scope
    assertEquals(liveTensors(), before + 1);
    assertEquals(outer.peek().disposed, true);
    assertEquals(outer.sum.item(), 12);
    outer.sum.dispose();
  });
});

Deno.test("tidy keeps tensors found in returned arrays, objects and Maps, and kept tensors", () => {
  balanced("containers", () => {
    const before = liveTensors();
    let kept: Tensor | null = null;
    const result = tidy(() => {
      const a = Tensor.ones([1]), b = Tensor.zeros([1]), c = Tensor.full([1], 3), d = Tensor.full([1], 4);
      Tensor.full([1], 5); // dropped
      kept = Tensor.full([1], 6).keep();
      const k2 = keep(Tensor.full([1], 7));
      const map = new Map<string, Tensor>([["d", d]]);
      return { list: [a, [b]], nested: { c }, map, k2 };
    });
    // a, b, c, d (returned) + kept + k2 = 6; the dropped one is gone
    assertEquals(liveTensors(), before + 6);
    assertEquals(result.list[0] instanceof Tensor && !result.list[0].disposed, true);
    assertEquals(result.nested.c.item(), 3);
    assertEquals(result.map.get("d")!.item(), 4);
    assertEquals(kept!.item(), 6);
    // kept tensors are outside every scope: an enclosing tidy does not free them either
    tidy(() => tidy(() => kept));
    assertEquals(kept!.disposed, false);
    for (
      const t of [result.list[0] as Tensor, (result.list[1] as Tensor[])[0], result.nested.c, result.map.get("d")!]
    ) {
      t.dispose();
    }
    kept!.dispose();
    result.k2.dispose();
  });
});

Deno.test("a returned tensor inside an enclosing scope is freed when that scope ends", () => {
  balanced("enclosing", () => {
    const before = liveTensors();
    tidy(() => {
      const inner = tidy(() => Tensor.ones([2]).mul(3));
      assertEquals(liveTensors(), before + 1);
      assertEquals(inner.toArray(), [3, 3]);
    });
    assertEquals(liveTensors(), before);
  });
});

Deno.test("1000 forward+backward steps inside tidy return to the baseline", () => {
  const w = Tensor.randn([8, 4], { dtype: "float32" }).mul(0.1).keep().requiresGrad_();
  const b = Tensor.zeros([8]).requiresGrad_();
  const baseline = liveTensors();
  for (let step = 0; step < 1000; step++) {
    tidy(() => {
      const x = Tensor.randn([16, 4]);
      const target = Tensor.randint(0, 8, [16]);
      const logits = F.linear(F.layerNorm(x, [4], null, null, 1e-5), w, b).gelu();
      const loss = F.crossEntropy(logits, target).add(F.mseLoss(logits, logits.detach().mul(0.5)));
      loss.backward();
      // an SGD step under no-grad, through the gradient handles
      noGrad(() => {
        w.sub_(w.grad!.mul(0.01));
        b.sub_(b.grad!.mul(0.01));
      });
      w.zeroGrad();
      b.zeroGrad();
    });
    if (step % 100 === 0) assertEquals(liveTensors(), baseline, `after step ${step}`);
  }
  assertEquals(liveTensors(), baseline, "after 1000 steps");
  assertEquals(w.grad, null);
  w.dispose();
  b.dispose();
  assertEquals(liveTensors(), baseline - 2);
});

Deno.test("a throwing function inside tidy still frees its tensors and rethrows", () => {
  balanced("throw", () => {
    const before = liveTensors();
    assertThrows(
      () =>
        tidy(() => {
          Tensor.ones([3]).mul(2);
          assertEquals(liveTensors(), before + 2);
          throw new RangeError("boom");
        }),
      RangeError,
      ["boom"],
    );
    assertEquals(liveTensors(), before);
    // a native failure inside a nested scope
    assertThrows(
      () =>
        tidy(() => {
          Tensor.ones([2]);
          tidy(() => Tensor.ones([2, 3]).matmul(Tensor.ones([4, 5])));
        }),
      TorchError,
      ["matmul"],
    );
    assertEquals(liveTensors(), before);
    // a Promise result is refused (scopes are synchronous) and its tensors are freed
    assertThrows(
      () =>
        tidy(() => {
          Tensor.ones([2]);
          return Promise.resolve(0);
        }),
      TypeError,
      ["Promise"],
    );
    assertEquals(liveTensors(), before);
  });
});

Deno.test("dispose is idempotent and a disposed tensor throws TorchError when used", () => {
  balanced("dispose", () => {
    const before = liveTensors();
    const t = Tensor.ones([2, 2]);
    assertEquals(liveTensors(), before + 1);
    t.dispose();
    assertEquals(liveTensors(), before);
    t.dispose();
    t[Symbol.dispose]();
    assertEquals(liveTensors(), before, "a second dispose frees nothing more");
    assertEquals(t.disposed, true);
    assertEquals(t.toString(), "Tensor(disposed)");
    assertTorchError(() => t.add(1), ["dispose"]);
    assertTorchError(() => t.shape, ["dispose"]);
    assertTorchError(() => t.toArray(), ["dispose"]);
    const other = Tensor.ones([2, 2]);
    assertTorchError(() => other.add(t), ["dispose"]);
    assertTorchError(() => t.alias(), ["dispose"]);
    assertEquals(liveTensors(), before + 1, "a failed call makes no handle");
    other.dispose();
  });
});

Deno.test("disposing a tensor inside its scope, then leaving the scope, frees it once", () => {
  balanced("dispose in scope", () => {
    const before = liveTensors();
    tidy(() => {
      const t = Tensor.ones([2]);
      t.dispose();
      assertEquals(liveTensors(), before);
    });
    assertEquals(liveTensors(), before);
    // returning a disposed tensor is harmless
    const r = tidy(() => {
      const t = Tensor.ones([2]);
      t.dispose();
      return t;
    });
    assertEquals(r.disposed, true);
    assertEquals(liveTensors(), before);
  });
});

Deno.test("`using` declarations dispose at the end of the block", () => {
  balanced("using", () => {
    const before = liveTensors();
    let escaped: Tensor;
    {
      using a = Tensor.ones([3]);
      using b = a.mul(2);
      escaped = b;
      assertEquals(liveTensors(), before + 2);
      assertEquals(b.toArray(), [2, 2, 2]);
    }
    assertEquals(liveTensors(), before);
    assertEquals(escaped.disposed, true);
    // also when the block throws
    assertThrows(() => {
      using _c = Tensor.ones([1]);
      throw new RangeError("in block");
    }, RangeError);
    assertEquals(liveTensors(), before);
  });
});

Deno.test("views and graph intermediates outlive the handles the user disposed", () => {
  balanced("lifetimes", () => {
    // a view keeps the storage of a disposed base alive
    const base = Tensor.fromArray([1, 2, 3, 4]);
    const view = base.slice(0, 1, 3);
    base.dispose();
    assertEquals(view.toArray(), [2, 3]);
    view.dispose();
    // an intermediate disposed in TypeScript stays in the autograd graph
    const x = Tensor.fromArray([1, 2, 3], [3], { dtype: "float64" }).requiresGrad_();
    const y = x.mul(x);
    const z = y.sum();
    y.dispose();
    z.backward();
    z.dispose();
    const g = x.grad!;
    assertEquals(g.toArray(), [2, 4, 6]);
    g.dispose();
    x.dispose();
  });
});

Deno.test("alias and grad handles are counted and freed independently", () => {
  balanced("handles", () => {
    const before = liveTensors();
    const x = Tensor.fromArray([1, 2]).requiresGrad_();
    tidy(() => x.mul(3).sum().backward());
    const g1 = x.grad!, g2 = x.grad!;
    const alias = x.alias();
    assertEquals(liveTensors(), before + 4);
    x.dispose(); // the alias still reaches the same tensor and its gradient
    const g3 = alias.grad!;
    assertEquals(g3.toArray(), [3, 3]);
    for (const t of [g1, g2, g3, alias]) t.dispose();
    assertEquals(liveTensors(), before);
    assert(g1.disposed && alias.disposed);
  });
});
