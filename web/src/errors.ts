// What a failed call tells a person: the server's own message (never a generic one), the machine
// reason from google.rpc.ErrorInfo, and the fields google.rpc.BadRequest names.
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export interface Problem {
  message: string;
  code: Code | undefined;
  reason: string;
  fields: string[];
}

export function problem(error: unknown): Problem {
  if (error instanceof ConnectError) {
    const info = error.findDetails(ErrorInfoSchema)[0];
    const fields = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));
    return { message: error.rawMessage || Code[error.code], code: error.code, reason: info?.reason ?? "", fields };
  }
  return { message: error instanceof Error ? error.message : String(error), code: undefined, reason: "", fields: [] };
}

export function reasonOf(error: unknown): string {
  return problem(error).reason;
}
