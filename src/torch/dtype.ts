// dtype.ts: the dtype and device vocabularies of the TypeScript side and their integer codes in detailclip.h.

/** A tensor element type. */
export type DType =
  | "float32"
  | "float64"
  | "float16"
  | "bfloat16"
  | "int64"
  | "int32"
  | "uint8"
  | "bool"
  | "int8"
  | "int16";
/** "meta" tensors have shapes and dtypes but no storage: models built there cost nothing (parameter counts). */
export type Device = "cpu" | "meta" | "cuda" | `cuda:${number}`;

const dtypeCodes: Record<DType, number> = {
  float32: 0,
  float64: 1,
  float16: 2,
  bfloat16: 3,
  int64: 4,
  int32: 5,
  uint8: 6,
  bool: 7,
  int8: 8,
  int16: 9,
};
const dtypeNames = Object.keys(dtypeCodes) as DType[];

/** Bytes per element. */
export const dtypeSize: Record<DType, number> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  uint8: 1,
  bool: 1,
  int8: 1,
  int16: 2,
};

export function dtypeCode(dtype: DType): number {
  const code = dtypeCodes[dtype];
  if (code === undefined) throw new TypeError(`unknown dtype '${dtype}' (expected one of ${dtypeNames.join(", ")})`);
  return code;
}

export function dtypeFromCode(code: number): DType {
  const name = dtypeNames[code];
  if (name === undefined) throw new TypeError(`unknown dtype code ${code}`);
  return name;
}

export function deviceCode(device: Device): number {
  if (device === "cpu") return -1;
  if (device === "meta") return -3;
  if (device === "cuda") return 0;
  const match = /^cuda:(\d+)$/.exec(device);
  if (!match) throw new TypeError(`unknown device '${device}' (expected cpu, meta, cuda or cuda:N)`);
  return Number(match[1]);
}

export function deviceFromCode(code: number): Device {
  if (code === -1) return "cpu";
  if (code === -3) return "meta";
  return `cuda:${code}`;
}

let defaultDevice: Device = "cpu";

/** The device factories use when none is given (torch.set_default_device). */
export function getDefaultDevice(): Device {
  return defaultDevice;
}

/** Runs fn with another default device for factories, e.g. "meta" to count a model's parameters for free. */
export function withDefaultDevice<T>(device: Device, fn: () => T): T {
  deviceCode(device);
  const previous = defaultDevice;
  defaultDevice = device;
  try {
    return fn();
  } finally {
    defaultDevice = previous;
  }
}

export function isFloating(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float64" || dtype === "float16" || dtype === "bfloat16";
}
