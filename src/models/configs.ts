// configs.ts: architectures as data. Every preset is validated by the same zod schemas that check user configs,
// so a typo in a preset fails the same way a typo in a config file does.
import { z } from "zod";

export const VisionConfigSchema = z.object({
  imageSize: z.number().int().positive(),
  patchSize: z.number().int().positive(),
  width: z.number().int().positive(),
  depth: z.number().int().positive(),
  heads: z.number().int().positive(),
  mlpRatio: z.number().positive().default(4),
}).strict().refine((v) => v.imageSize % v.patchSize === 0, {
  message: "imageSize must be a multiple of patchSize",
}).refine((v) => v.width % v.heads === 0, { message: "vision width must be divisible by heads" });

export const TextConfigSchema = z.object({
  context: z.number().int().min(2),
  vocab: z.number().int().min(3),
  width: z.number().int().positive(),
  layers: z.number().int().positive(),
  heads: z.number().int().positive(),
}).strict().refine((t) => t.width % t.heads === 0, { message: "text width must be divisible by heads" });

export const ClipConfigSchema = z.object({
  kind: z.literal("clip"),
  name: z.string(),
  embedDim: z.number().int().positive(),
  vision: VisionConfigSchema,
  text: TextConfigSchema,
}).strict();

export const DetailClipConfigSchema = z.object({
  kind: z.literal("detailclip"),
  name: z.string(),
  embedDim: z.number().int().positive(),
  vision: VisionConfigSchema,
  text: TextConfigSchema,
  decoder: z.object({
    depth: z.number().int().positive().default(1),
    heads: z.number().int().positive(),
    mlpRatio: z.number().positive().default(4),
  }).strict(),
  ibot: z.object({
    outDim: z.number().int().positive(),
    patchOutDim: z.number().int().positive(),
    hiddenDim: z.number().int().positive(),
    bottleneckDim: z.number().int().positive(),
  }).strict(),
  /** The official --mask-ratio: the number of kept cells is int(cells·maskRatio)+1
   * (docs/model.md#attention-guided-token-removal). */
  maskRatio: z.number().min(0).max(1),
  /** Side of a masking cell in patches (official: 2, i.e. 14×14 patches pooled to 7×7 cells). */
  maskCell: z.number().int().positive(),
}).strict().refine((c) => c.ibot.outDim === c.ibot.patchOutDim, {
  message: "the shared iBOT head needs ibot.outDim == ibot.patchOutDim",
}).refine((c) => (c.vision.imageSize / c.vision.patchSize) % c.maskCell === 0, {
  message: "the patch grid side must be a multiple of maskCell",
});

export type VisionConfig = z.infer<typeof VisionConfigSchema>;
export type TextConfig = z.infer<typeof TextConfigSchema>;
/** The config of a plain CLIP model (zod-validated data, see ClipConfigSchema). */
export type ClipConfig = z.infer<typeof ClipConfigSchema>;
/** The config of a DetailCLIP model (zod-validated data, see DetailClipConfigSchema). */
export type DetailClipConfig = z.infer<typeof DetailClipConfigSchema>;
/** A model config: DetailCLIP or CLIP. */
export type ModelConfig = ClipConfig | DetailClipConfig;

const openaiText = { context: 77, vocab: 49408, width: 512, layers: 12, heads: 8 };
const ibotOfficial = { outDim: 8192, patchOutDim: 8192, hiddenDim: 2048, bottleneckDim: 256 };
const backbones = {
  VITS16: { imageSize: 224, patchSize: 16, width: 384, depth: 12, heads: 12 }, // the official ViT-S has 12 heads
  VITB16: { imageSize: 224, patchSize: 16, width: 768, depth: 12, heads: 12 },
  VITL16: { imageSize: 224, patchSize: 16, width: 1024, depth: 24, heads: 16 },
  VITB32: { imageSize: 224, patchSize: 32, width: 768, depth: 12, heads: 12 },
};

function detailClip(name: keyof typeof backbones): unknown {
  return {
    kind: "detailclip",
    name: `DetailCLIP_${name}`,
    embedDim: 512,
    vision: backbones[name],
    text: openaiText,
    decoder: { depth: 1, heads: 16 },
    ibot: ibotOfficial,
    maskRatio: 0.5,
    // A 7×7 grid (ViT-B/32) cannot be pooled in 2×2 cells; it masks single patches.
    maskCell: name === "VITB32" ? 1 : 2,
  };
}

function clip(name: keyof typeof backbones): unknown {
  return { kind: "clip", name: `CLIP_${name}`, embedDim: 512, vision: backbones[name], text: openaiText };
}

/** The dimensions of the golden reference step (tests/fixtures/golden/tiny/meta.json). */
const tiny = {
  kind: "detailclip",
  name: "tiny",
  embedDim: 32,
  vision: { imageSize: 224, patchSize: 16, width: 64, depth: 2, heads: 4 },
  text: { context: 16, vocab: 512, width: 64, layers: 2, heads: 4 },
  decoder: { depth: 1, heads: 4 },
  ibot: { outDim: 256, patchOutDim: 256, hiddenDim: 128, bottleneckDim: 64 },
  maskRatio: 0.5,
  maskCell: 2,
};

/**
 * The built-in demo: the golden tiny dims on 64 px images with patch 8 (an 8×8 grid of 2×2-patch cells). The
 * vocabulary is replaced by the size of the BPE learned from the synthetic captions when training on them.
 */
const tinySynthetic = {
  ...tiny,
  name: "tiny_synthetic",
  vision: { imageSize: 64, patchSize: 8, width: 64, depth: 2, heads: 4 },
  text: { context: 32, vocab: 1024, width: 64, layers: 2, heads: 4 },
};
const clipTinySynthetic = {
  kind: "clip",
  name: "CLIP_tiny_synthetic",
  embedDim: tinySynthetic.embedDim,
  vision: tinySynthetic.vision,
  text: tinySynthetic.text,
};

const rawPresets: Record<string, unknown> = {
  tiny,
  tiny_synthetic: tinySynthetic,
  CLIP_tiny_synthetic: clipTinySynthetic,
  DetailCLIP_VITS16: detailClip("VITS16"),
  DetailCLIP_VITB16: detailClip("VITB16"),
  DetailCLIP_VITL16: detailClip("VITL16"),
  DetailCLIP_VITB32: detailClip("VITB32"),
  CLIP_VITS16: clip("VITS16"),
  CLIP_VITB16: clip("VITB16"),
  CLIP_VITL16: clip("VITL16"),
  CLIP_VITB32: clip("VITB32"),
};

export const ModelConfigSchema = z.union([DetailClipConfigSchema, ClipConfigSchema]);

/** The names of the built-in model presets, in table order. */
export function presetNames(): string[] {
  return Object.keys(rawPresets);
}

/** Validates a model config (from a preset, a file or a checkpoint) with messages that name the field. */
export function parseModelConfig(raw: unknown, where: string): ModelConfig {
  const result = ModelConfigSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new Error(`${where}: invalid model config: ${issues.join("; ")}`);
  }
  return result.data;
}

/** The config of a preset by name; throws naming the known presets when there is no such preset. */
export function modelPreset(name: string): ModelConfig {
  const raw = rawPresets[name];
  if (raw === undefined) throw new Error(`unknown model '${name}' (known: ${presetNames().join(", ")})`);
  return parseModelConfig(raw, `preset ${name}`);
}

/** The golden files' `hyper` block as a DetailCLIP config (224 px, patch 16, the official masking). */
export function configFromGoldenHyper(hyper: Record<string, number>, maskRatio: number): DetailClipConfig {
  const need = (key: string): number => {
    const value = hyper[key];
    if (typeof value !== "number") throw new Error(`meta.json: hyper.${key} is missing or not a number`);
    return value;
  };
  const config = parseModelConfig({
    kind: "detailclip",
    name: "golden",
    embedDim: need("embed_dim"),
    vision: { imageSize: 224, patchSize: 16, width: need("vision_width"), depth: need("depth"), heads: need("heads") },
    text: {
      context: need("context"),
      vocab: need("vocab"),
      width: need("text_width"),
      layers: need("text_layers"),
      heads: need("text_heads"),
    },
    decoder: { depth: 1, heads: need("decoder_heads") },
    ibot: {
      outDim: need("out_dim"),
      patchOutDim: need("out_dim"),
      hiddenDim: need("head_hidden"),
      bottleneckDim: need("bottleneck"),
    },
    maskRatio,
    maskCell: 2,
  }, "meta.json hyper");
  return config as DetailClipConfig;
}
