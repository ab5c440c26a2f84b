// openclip_configs.ts: the OpenAI / OpenCLIP ViT-CLIP architectures as data (open_clip's model_configs/*.json for the
// ViT models, OpenAI's names for the released ones), and the architecture of a weight file read off its shapes. Two
// things the weights cannot tell: the number of heads (taken from the preset with the same widths, else width / 64,
// open_clip's default head width) and the activation (QuickGELU for OpenAI's weights and open_clip's `-quickgelu`
// models, GELU for the others), which is why a name (`--model`) wins over inference. ResNet towers and the text
// variants with a Linear projection or attention pooling (CoCa, SigLIP) are not covered.
import { z } from "zod";

const tower = {
  width: z.number().int().positive(),
  layers: z.number().int().positive(),
  heads: z.number().int().positive(),
  mlpWidth: z.number().int().positive(),
};
const headsDivide = [(t: { width: number; heads: number }) => t.width % t.heads === 0, {
  message: "width must be divisible by heads",
}] as const;

export const OpenClipConfigSchema = z.object({
  kind: z.literal("openclip"),
  name: z.string(),
  embedDim: z.number().int().positive(),
  /** x · sigmoid(1.702 x) in every MLP (OpenAI's weights), else exact GELU. */
  quickGelu: z.boolean(),
  vision: z.object({ imageSize: z.number().int().positive(), patchSize: z.number().int().positive(), ...tower })
    .strict().refine(...headsDivide).refine((v) => v.imageSize % v.patchSize === 0, {
      message: "imageSize must be a multiple of patchSize",
    }),
  text: z.object({ context: z.number().int().min(2), vocab: z.number().int().min(3), ...tower }).strict()
    .refine(...headsDivide),
}).strict();

/** The config of an OpenAI/OpenCLIP architecture (zod-validated data). */
export type OpenClipConfig = z.infer<typeof OpenClipConfigSchema>;

/** OpenAI's image normalisation, which every OpenAI and OpenCLIP ViT model was trained with. */
export const OPENAI_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
/** OpenAI's per-channel image standard deviations (OpenAI and OpenCLIP models). */
export const OPENAI_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

interface Dims {
  embedDim: number;
  imageSize: number;
  patchSize: number;
  visionWidth: number;
  visionLayers: number;
  visionHeads: number;
  textWidth: number;
  textLayers: number;
  textHeads: number;
}

function config(name: string, d: Dims, quickGelu: boolean): OpenClipConfig {
  return {
    kind: "openclip",
    name,
    embedDim: d.embedDim,
    quickGelu,
    vision: {
      imageSize: d.imageSize,
      patchSize: d.patchSize,
      width: d.visionWidth,
      layers: d.visionLayers,
      heads: d.visionHeads,
      mlpWidth: 4 * d.visionWidth,
    },
    text: {
      context: 77,
      vocab: 49408,
      width: d.textWidth,
      layers: d.textLayers,
      heads: d.textHeads,
      mlpWidth: 4 * d.textWidth,
    },
  };
}

const B = { embedDim: 512, visionWidth: 768, visionLayers: 12, visionHeads: 12, textWidth: 512, textLayers: 12 };
const L = { embedDim: 768, visionWidth: 1024, visionLayers: 24, visionHeads: 16, textWidth: 768, textLayers: 12 };
const dims: Record<string, Dims> = {
  "ViT-B-32": { ...B, imageSize: 224, patchSize: 32, textHeads: 8 },
  "ViT-B-16": { ...B, imageSize: 224, patchSize: 16, textHeads: 8 },
  "ViT-L-14": { ...L, imageSize: 224, patchSize: 14, textHeads: 12 },
  "ViT-L-14-336": { ...L, imageSize: 336, patchSize: 14, textHeads: 12 },
  // open_clip's ViT-H-14: head width 80 in the vision tower.
  "ViT-H-14": {
    embedDim: 1024,
    imageSize: 224,
    patchSize: 14,
    visionWidth: 1280,
    visionLayers: 32,
    visionHeads: 16,
    textWidth: 1024,
    textLayers: 24,
    textHeads: 16,
  },
};

/** OpenAI's names for its released models (their `.pt` archives), which use QuickGELU. */
const OPENAI_NAMES: Record<string, string> = {
  "ViT-B/32": "ViT-B-32",
  "ViT-B/16": "ViT-B-16",
  "ViT-L/14": "ViT-L-14",
  "ViT-L/14@336px": "ViT-L-14-336",
};

const presets = new Map<string, OpenClipConfig>();
for (const [name, d] of Object.entries(dims)) {
  presets.set(name, config(name, d, false));
  presets.set(`${name}-quickgelu`, config(`${name}-quickgelu`, d, true));
}
for (const [openai, name] of Object.entries(OPENAI_NAMES)) presets.set(openai, config(openai, dims[name], true));

/** The names of the OpenAI/OpenCLIP architectures known by name (ViT-B-32, ViT-B/16, ...). */
export function openClipPresetNames(): string[] {
  return [...presets.keys()];
}

/** Whether `name` is a known OpenAI/OpenCLIP architecture. */
export function isOpenClipPreset(name: string): boolean {
  return presets.has(name);
}

/** The config of an OpenAI/OpenCLIP architecture by name; throws naming the known ones otherwise. */
export function openClipPreset(name: string): OpenClipConfig {
  const preset = presets.get(name);
  if (preset === undefined) {
    throw new Error(`unknown OpenAI/OpenCLIP model '${name}' (known: ${openClipPresetNames().join(", ")})`);
  }
  return structuredClone(preset);
}

/** Validates an OpenCLIP config with messages that name the field. */
export function parseOpenClipConfig(raw: unknown, where: string): OpenClipConfig {
  const result = OpenClipConfigSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new Error(`${where}: invalid OpenCLIP config: ${issues.join("; ")}`);
  }
  return result.data;
}

/** An architecture that the shapes of a weight file do not determine; the message names the key. */
export class OpenClipShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OpenClipShapeError";
  }
}

/**
 * The architecture of OpenCLIP-keyed weights from their shapes (what OpenAI's build_model does): widths, layer counts,
 * patch and image size, context, vocabulary and embedding size. Heads come from the preset with the same widths
 * (else width / 64); the activation is `quickGelu`.
 */
export function inferOpenClipConfig(
  shapes: ReadonlyMap<string, readonly number[]>,
  options: { quickGelu: boolean; name?: string },
): OpenClipConfig {
  const shape = (key: string, rank: number): readonly number[] => {
    const s = shapes.get(key);
    if (s === undefined) throw new OpenClipShapeError(`'${key}' is missing (not an OpenAI/OpenCLIP ViT CLIP)`);
    if (s.length !== rank) throw new OpenClipShapeError(`'${key}' has shape [${s}], expected ${rank} dimensions`);
    return s;
  };
  const countLayers = (prefix: string): number => {
    let n = 0;
    while (shapes.has(`${prefix}.${n}.ln_1.weight`)) n++;
    if (n === 0) throw new OpenClipShapeError(`no '${prefix}.0.ln_1.weight' (not an OpenAI/OpenCLIP ViT CLIP)`);
    return n;
  };
  const [visionWidth, , patchSize] = shape("visual.conv1.weight", 4);
  const [tokens] = shape("visual.positional_embedding", 2);
  const grid = Math.round(Math.sqrt(tokens - 1));
  if (grid * grid !== tokens - 1) {
    throw new OpenClipShapeError(`'visual.positional_embedding' has ${tokens} rows, not 1 + a square grid`);
  }
  const [textWidth] = shape("ln_final.weight", 1);
  const [, embedDim] = shape("text_projection", 2);
  const [context] = shape("positional_embedding", 2);
  const [vocab] = shape("token_embedding.weight", 2);
  const visionLayers = countLayers("visual.transformer.resblocks");
  const textLayers = countLayers("transformer.resblocks");
  const [visionMlp] = shape("visual.transformer.resblocks.0.mlp.c_fc.weight", 2);
  const [textMlp] = shape("transformer.resblocks.0.mlp.c_fc.weight", 2);
  const same = [...presets.values()].find((p) =>
    p.vision.width === visionWidth && p.vision.layers === visionLayers && p.text.width === textWidth &&
    p.text.layers === textLayers && p.embedDim === embedDim && p.vision.patchSize === patchSize &&
    p.vision.imageSize === grid * patchSize
  );
  const name = options.name ??
    (same ? `${same.name.replace(/-quickgelu$/, "")}${options.quickGelu ? "-quickgelu" : ""}` : "openclip");
  return parseOpenClipConfig({
    kind: "openclip",
    name,
    embedDim,
    quickGelu: options.quickGelu,
    vision: {
      imageSize: grid * patchSize,
      patchSize,
      width: visionWidth,
      layers: visionLayers,
      heads: same?.vision.heads ?? Math.max(1, visionWidth / 64),
      mlpWidth: visionMlp,
    },
    text: {
      context,
      vocab,
      width: textWidth,
      layers: textLayers,
      heads: same?.text.heads ?? Math.max(1, textWidth / 64),
      mlpWidth: textMlp,
    },
  }, "weights' shapes");
}
