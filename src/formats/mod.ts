// File formats that know nothing of tensors, models or data sets: CRC-32, PNG (write), zip (read), pickle (read).
export { crc32 } from "./crc32.ts";
export { encodePng, pngChunk, type PngColorType } from "./png.ts";
export { ZIP_DEFLATED, ZIP_STORED, ZipArchive, type ZipEntry, ZipError } from "./zip.ts";
export {
  PickleCallable,
  PickleError,
  PickleObject,
  PickleTuple,
  type PickleValue,
  readPickle,
  type ReadPickleOptions,
} from "./pickle.ts";
