// Numbers and names for people.
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";

import { BatchState, DownloadPhase, DownloadState } from "./gen/wallwhale/v1/download_pb.js";

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function bytes(value: bigint | number): string {
  let n = Number(value);
  let unit = 0;
  while (n >= 1000 && unit < UNITS.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? n : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${UNITS[unit]}`;
}

export function speed(bytesPerSecond: bigint | number): string {
  return Number(bytesPerSecond) > 0 ? `${bytes(bytesPerSecond)}/s` : "–";
}

export function duration(value: Duration | undefined): string {
  if (!value) return "–";
  let s = Math.round(Number(value.seconds) + value.nanos / 1e9);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s} s` : `${s} s`;
}

export function time(value: Timestamp | undefined): string {
  if (!value) return "–";
  return new Date(Number(value.seconds) * 1000).toLocaleString();
}

/** "WAITING_FOR_STEAM_GUARD" -> "waiting for Steam Guard". */
function words(name: string | undefined): string {
  return (name ?? "unknown").toLowerCase().replaceAll("_", " ").replace("steam guard", "Steam Guard");
}

export const stateName = (state: DownloadState): string => words(DownloadState[state]);
export const phaseName = (phase: DownloadPhase): string => words(DownloadPhase[phase]);
export const batchStateName = (state: BatchState): string => words(BatchState[state]);

export const FINAL_STATES = new Set([DownloadState.SUCCEEDED, DownloadState.FAILED, DownloadState.CANCELLED]);
