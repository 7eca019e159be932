// Reads a saved zip back: every entry's data, inflated where deflated, must match the CRC-32 and size
// that the central directory records. The batch archive has no sha256 (it is assembled while it
// streams), so this is what tells a good file from a damaged one.

import { open, type FileHandle } from "node:fs/promises";
import { createInflateRaw, crc32 } from "node:zlib";

const END = 0x06054b50;
const END64 = 0x06064b50;
const END64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const STORED = 0;
const DEFLATED = 8;
const BLOCK = 1 << 20;

/** One entry as the central directory describes it. */
interface Entry {
  name: string;
  method: number;
  flags: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

/** Thrown when the file is not a readable zip or an entry does not match its recorded CRC-32 or size. */
export class ZipError extends Error {}

/** Checks every entry of the zip at `path`; returns how many there are. */
export async function verifyZip(path: string): Promise<number> {
  const file = await open(path, "r");
  try {
    const entries = await centralDirectory(file);
    for (const entry of entries) await verifyEntry(file, entry);
    return entries.length;
  } finally {
    await file.close();
  }
}

async function read(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await file.read(buffer, 0, length, position);
  if (bytesRead !== length) throw new ZipError(`the zip ends at byte ${position + bytesRead}, inside a record`);
  return buffer;
}

async function centralDirectory(file: FileHandle): Promise<Entry[]> {
  const { size } = await file.stat();
  // The end record is the last 22 bytes, followed by a comment of at most 65,535 bytes.
  const tailStart = Math.max(0, size - 22 - 0xffff);
  const tail = await read(file, tailStart, size - tailStart);
  let end = -1;
  for (let at = tail.length - 22; at >= 0; at--) {
    if (tail.readUInt32LE(at) === END && at + 22 + tail.readUInt16LE(at + 20) === tail.length) {
      end = at;
      break;
    }
  }
  if (end < 0) throw new ZipError("no end of central directory record: not a zip, or cut short");
  let count = tail.readUInt16LE(end + 10);
  let directorySize = tail.readUInt32LE(end + 12);
  let directoryOffset = tail.readUInt32LE(end + 16);
  if (count === 0xffff || directorySize === 0xffffffff || directoryOffset === 0xffffffff) {
    const locatorAt = tailStart + end - 20;
    const locator = await read(file, locatorAt, 20);
    if (locator.readUInt32LE(0) !== END64_LOCATOR) throw new ZipError("a zip64 archive without its zip64 locator");
    const record = await read(file, safeNumber(locator.readBigUInt64LE(8)), 56);
    if (record.readUInt32LE(0) !== END64) throw new ZipError("the zip64 end record is not where its locator says");
    count = safeNumber(record.readBigUInt64LE(32));
    directorySize = safeNumber(record.readBigUInt64LE(40));
    directoryOffset = safeNumber(record.readBigUInt64LE(48));
  }
  const directory = await read(file, directoryOffset, directorySize);
  const entries: Entry[] = [];
  let at = 0;
  for (let index = 0; index < count; index++) {
    if (at + 46 > directory.length || directory.readUInt32LE(at) !== CENTRAL) {
      throw new ZipError(`central directory entry ${index} is damaged`);
    }
    const nameLength = directory.readUInt16LE(at + 28);
    const extraLength = directory.readUInt16LE(at + 30);
    const commentLength = directory.readUInt16LE(at + 32);
    const entry: Entry = {
      name: directory.toString("utf8", at + 46, at + 46 + nameLength),
      method: directory.readUInt16LE(at + 10),
      flags: directory.readUInt16LE(at + 8),
      crc: directory.readUInt32LE(at + 16),
      compressedSize: directory.readUInt32LE(at + 20),
      size: directory.readUInt32LE(at + 24),
      localOffset: directory.readUInt32LE(at + 42),
    };
    applyZip64(entry, directory.subarray(at + 46 + nameLength, at + 46 + nameLength + extraLength));
    entries.push(entry);
    at += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

/** Sizes and offsets too big for 32 bits are in the zip64 extra field, in this order. */
function applyZip64(entry: Entry, extra: Buffer): void {
  for (let at = 0; at + 4 <= extra.length; ) {
    const id = extra.readUInt16LE(at);
    const length = extra.readUInt16LE(at + 2);
    if (id === 0x0001) {
      let field = at + 4;
      const next = (): number => {
        if (field + 8 > at + 4 + length) throw new ZipError(`the zip64 field of ${entry.name} is too short`);
        const value = safeNumber(extra.readBigUInt64LE(field));
        field += 8;
        return value;
      };
      if (entry.size === 0xffffffff) entry.size = next();
      if (entry.compressedSize === 0xffffffff) entry.compressedSize = next();
      if (entry.localOffset === 0xffffffff) entry.localOffset = next();
      return;
    }
    at += 4 + length;
  }
}

async function verifyEntry(file: FileHandle, entry: Entry): Promise<void> {
  if (entry.flags & 1) throw new ZipError(`${entry.name} is encrypted`);
  if (entry.method !== STORED && entry.method !== DEFLATED) {
    throw new ZipError(`${entry.name} uses compression method ${entry.method}`);
  }
  const local = await read(file, entry.localOffset, 30);
  if (local.readUInt32LE(0) !== LOCAL) throw new ZipError(`the local header of ${entry.name} is missing`);
  const dataStart = entry.localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  let crc = 0;
  let size = 0;
  const take = (data: Buffer): void => {
    crc = crc32(data, crc);
    size += data.length;
  };
  const inflate = entry.method === DEFLATED ? createInflateRaw() : undefined;
  inflate?.on("data", take);
  const inflated = inflate && new Promise<void>((done, failed) => inflate.on("end", done).on("error", failed));
  for (let offset = 0; offset < entry.compressedSize; offset += BLOCK) {
    const block = await read(file, dataStart + offset, Math.min(BLOCK, entry.compressedSize - offset));
    if (!inflate) take(block);
    else if (!inflate.write(block)) await new Promise((drained) => inflate.once("drain", drained));
  }
  if (inflate) {
    inflate.end();
    try {
      await inflated;
    } catch (error) {
      throw new ZipError(`${entry.name} does not inflate: ${(error as Error).message}`);
    }
  }
  if (size !== entry.size || crc !== entry.crc) {
    throw new ZipError(
      `${entry.name}: ${size} bytes with CRC-32 ${hex(crc)}, the zip records ${entry.size} bytes and ${hex(entry.crc)}`,
    );
  }
}

function safeNumber(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError("a zip64 size beyond 2^53");
  return Number(value);
}

function hex(value: number): string {
  return value.toString(16).padStart(8, "0");
}
