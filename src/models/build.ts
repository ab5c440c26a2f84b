// build.ts: builds a model from its config (presets by name live in configs.ts).
import { CLIP } from "./clip.ts";
import { type ModelConfig, modelPreset } from "./configs.ts";
import { DetailCLIP } from "./detailclip.ts";

/** Either model the presets build: DetailCLIP or plain CLIP. */
export type AnyModel = DetailCLIP | CLIP;

/** Builds a model (randomly initialised, as the official code does) from a validated config. */
export function buildModel(config: ModelConfig): AnyModel {
  return config.kind === "detailclip" ? new DetailCLIP(config) : new CLIP(config);
}

/** Builds a model from a preset name (see presetNames()), e.g. `DetailCLIP_VITB16` or `CLIP_tiny_synthetic`. */
export function buildPreset(name: string): AnyModel {
  return buildModel(modelPreset(name));
}
