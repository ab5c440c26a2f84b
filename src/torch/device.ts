// device.ts: the one place that says which --device strings the CLI accepts and whether the machine has that device,
// so train, eval, viz and golden refuse `--device cuda` on a machine without CUDA before any work starts, with the
// devices that were found, instead of failing inside the first tensor copy.
import type { Device } from "./dtype.ts";
import { cudaDeviceCount, cudaIsAvailable } from "./runtime.ts";

/** `cpu`, `cuda` or `cuda:N`: what a user may pass to --device. */
export const DEVICE_PATTERN: RegExp = /^(cpu|cuda|cuda:\d+)$/;
export const DEVICE_CHOICES = "cpu, cuda or cuda:N";

/** A --device value that is malformed or names a device this machine does not have. */
export class DeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeviceError";
  }
}

/** Checks the spelling only (no native library needed): `flag` names the option in the message. */
export function parseDevice(value: string, flag = "--device"): Device {
  if (!DEVICE_PATTERN.test(value)) throw new DeviceError(`${flag}: expected ${DEVICE_CHOICES}, got '${value}'`);
  return value as Device;
}

/** Says what CUDA devices this process sees, for messages: "no CUDA device found" or "1 CUDA device (cuda:0)". */
export function describeCudaDevices(): string {
  const count = cudaIsAvailable() ? cudaDeviceCount() : 0;
  if (count === 0) return "no CUDA device found (this libtorch build or machine has none)";
  const names = Array.from({ length: Math.min(count, 8) }, (_, i) => `cuda:${i}`).join(", ");
  return `${count} CUDA device${count === 1 ? "" : "s"} found (${names}${count > 8 ? ", ..." : ""})`;
}

/** Refuses a CUDA device that is not there (`cuda` needs one; `cuda:N` needs N + 1); the CPU is always there. */
export function requireDevice(device: Device, flag = "--device"): void {
  if (device === "cpu" || device === "meta") return;
  const count = cudaIsAvailable() ? cudaDeviceCount() : 0;
  const index = device === "cuda" ? 0 : Number(device.slice("cuda:".length));
  if (index < count) return;
  throw new DeviceError(`${flag} ${device}: ${describeCudaDevices()}; use --device cpu`);
}
