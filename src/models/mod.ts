// The models' public surface: configs and presets by name, the builder, the DetailCLIP, CLIP and OpenCLIP modules.
export { type AnyModel, buildModel, buildPreset } from "./build.ts";
export {
  type ClipConfig,
  type DetailClipConfig,
  type ModelConfig,
  ModelConfigSchema,
  modelPreset,
  parseModelConfig,
  presetNames,
  type TextConfig,
  type VisionConfig,
} from "./configs.ts";
export {
  inferOpenClipConfig,
  isOpenClipPreset,
  OPENAI_MEAN,
  OPENAI_STD,
  type OpenClipConfig,
  openClipPreset,
  openClipPresetNames,
  OpenClipShapeError,
  parseOpenClipConfig,
} from "./openclip_configs.ts";
export { CLIP, type TowerConfig } from "./clip.ts";
export { DetailCLIP, type DetailClipOutputs } from "./detailclip.ts";
export { OpenClip, OpenClipVisionTransformer } from "./openclip.ts";
export { MaskVisionTransformer } from "./vit.ts";
export { TextTransformer } from "./text.ts";
