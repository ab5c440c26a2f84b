// Figures without a plotting library: loss curves (SVG) and the axis arithmetic every figure shares.
export { type LossCurveOptions, lossCurveSvg, type Series } from "./loss_curve.ts";
export { NICE_MANTISSAS, niceStep, ticksBetween } from "./ticks.ts";
