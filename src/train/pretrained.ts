// pretrained.ts: `train --pretrained W`: start a CLIP_* model, or DetailCLIP's student, from OpenAI/OpenCLIP weights
// (any file src/checkpoint/clip_weights.ts reads). The text tower is OpenAI's in both projects, so it maps key for key
// (transformer.resblocks.*, token_embedding, positional_embedding, ln_final, text_projection, logit_scale). The vision
// tower is mapped where the shapes fit onto our timm-style ViT: conv1 -> patch_embed.proj (bias 0), class_embedding ->
// cls_token, positional_embedding -> pos_embed, ln_1/attn.in_proj/attn.out_proj/ln_2/c_fc/c_proj -> norm1/attn.qkv/
// attn.proj/norm2/fc1/fc2, ln_post -> norm, proj -> image_projection. What it cannot carry is said in the log line:
// OpenAI's ln_pre has no place in our ViT, and our towers' activations (GELU in the ViT, QuickGELU in the text tower) and
// LayerNorm eps (1e-6 in the ViT) are kept, so the vision tower starts near the pretrained function, not at it.
// A tensor whose shape differs (another vocabulary, context or width) keeps its random init and is listed. DetailCLIP's
// EMA teacher then starts as a copy of the initialised student.
import { CLIP } from "../models/clip.ts";
import { DetailCLIP } from "../models/detailclip.ts";
import { noGrad, type Tensor } from "../torch/mod.ts";
import { ClipWeightsError, openClipWeights } from "../checkpoint/clip_weights.ts";
import { OptionError } from "./options.ts";

/** Our student key -> the OpenAI/OpenCLIP key it comes from, for every mapped tensor of `model`. */
export function pretrainedKeyMap(model: CLIP): Map<string, string> {
  const map = new Map<string, string>();
  for (const key of ["token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias"]) {
    map.set(key, key);
  }
  map.set("text_projection", "text_projection");
  map.set("logit_scale", "logit_scale");
  for (const [key] of model.transformer.namedParameters("transformer")) map.set(key, key);
  map.set("visual.cls_token", "visual.class_embedding");
  map.set("visual.pos_embed", "visual.positional_embedding");
  map.set("visual.patch_embed.proj.weight", "visual.conv1.weight");
  const blockNames: [string, string][] = [
    ["norm1", "ln_1"],
    ["attn.qkv", "attn.in_proj"],
    ["attn.proj", "attn.out_proj"],
    ["norm2", "ln_2"],
    ["mlp.fc1", "mlp.c_fc"],
    ["mlp.fc2", "mlp.c_proj"],
  ];
  for (let i = 0; i < model.visual.depth; i++) {
    for (const [ours, theirs] of blockNames) {
      const packed = theirs === "attn.in_proj"; // torch's MHA names its packed tensors in_proj_weight/in_proj_bias
      map.set(
        `visual.blocks.${i}.${ours}.weight`,
        `visual.transformer.resblocks.${i}.${theirs}${packed ? "_" : "."}weight`,
      );
      map.set(
        `visual.blocks.${i}.${ours}.bias`,
        `visual.transformer.resblocks.${i}.${theirs}${packed ? "_" : "."}bias`,
      );
    }
  }
  map.set("visual.norm.weight", "visual.ln_post.weight");
  map.set("visual.norm.bias", "visual.ln_post.bias");
  map.set("image_projection", "visual.proj");
  return map;
}

/** Equal shapes, up to leading 1s of ours (cls_token (1, 1, D) <- class_embedding (D)); the element order is the same. */
function sameLayout(theirs: readonly number[], ours: readonly number[]): boolean {
  const extra = ours.length - theirs.length;
  return extra >= 0 && ours.slice(0, extra).every((d) => d === 1) && ours.slice(extra).every((d, i) => d === theirs[i]);
}

/**
 * Copies what fits from `path` into the student of `model` and, for DetailCLIP, the student into the EMA teacher.
 * Returns the log line: how many tensors were initialised, which kept their init and why.
 */
export function initFromPretrained(model: CLIP, path: string): string {
  let file;
  try {
    file = openClipWeights(path);
  } catch (error) {
    if (error instanceof ClipWeightsError) throw new OptionError(`--pretrained ${error.message}`);
    throw error;
  }
  try {
    if (!file.shapes.has("visual.class_embedding")) {
      throw new OptionError(
        `--pretrained ${path}: not OpenAI/OpenCLIP ViT CLIP weights (no visual.class_embedding); to continue one of ` +
          "our runs or an official DetailCLIP checkpoint use --resume",
      );
    }
    const own = model.stateDict();
    const loaded: string[] = [];
    const kept: string[] = [];
    noGrad(() => {
      for (const [ours, theirs] of pretrainedKeyMap(model)) {
        const target = own.get(ours);
        if (target === undefined) throw new Error(`pretrainedKeyMap names '${ours}', which the model lacks`);
        const shape = file.shapes.get(theirs);
        const fits = shape !== undefined && sameLayout(shape, target.shape);
        if (!fits) {
          kept.push(`${ours} (${shape === undefined ? `no ${theirs}` : `[${shape}] vs [${target.shape}]`})`);
          continue;
        }
        using source: Tensor = file.read(theirs);
        using reshaped = source.reshape(target.shape);
        target.copy_(reshaped);
        loaded.push(ours);
      }
      // Our patch conv has a bias, OpenAI's has none: zero, so the projection is theirs.
      if (loaded.includes("visual.patch_embed.proj.weight")) model.visual.patch_embed.proj.bias?.zero_();
    });
    if (loaded.length === 0) {
      throw new OptionError(`--pretrained ${path}: no tensor fits this model (${kept.slice(0, 4).join(", ")}...)`);
    }
    if (model instanceof DetailCLIP) {
      const { teacher, student } = model.emaPairs();
      noGrad(() => {
        for (let i = 0; i < teacher.length; i++) teacher[i].copy_(student[i]);
      });
    }
    const dropped = file.shapes.has("visual.ln_pre.weight") ? "; visual.ln_pre has no place in our ViT (dropped)" : "";
    const keptNote = kept.length === 0
      ? ""
      : `; ${kept.length} kept their init: ${kept.slice(0, 4).join(", ")}${kept.length > 4 ? ", ..." : ""}`;
    return `pretrained: ${loaded.length} tensors from ${path} (${file.format})${keptNote}${dropped}` +
      (model instanceof DetailCLIP ? "; the EMA teacher starts as a copy" : "");
  } finally {
    file.close();
  }
}
