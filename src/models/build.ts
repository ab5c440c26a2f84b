// build.ts: builds a model from its config (presets by name live in configs.ts).
import { CLIP } from "./clip.ts";
import { type ModelConfig, modelPreset } from "./configs.ts";
import { DetailCLIP } from "./detailclip.ts";

export type AnyModel = DetailCLIP | CLIP;

export function buildModel(config: ModelConfig): AnyModel {
  return config.kind === "detailclip" ? new DetailCLIP(config) : new CLIP(config);
}

export function buildPreset(name: string): AnyModel {
  return buildModel(modelPreset(name));
}
