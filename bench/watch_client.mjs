// A light WatchDownload client for bench/progress_latency.py: Node's own HTTP/2 (nghttp2) speaking
// gRPC by hand, decoding only what the bench needs (sequence, event_time, which event), so that the
// watchers cost far less CPU than the server they measure. No dependency beyond Node itself.
//
// node bench/watch_client.mjs PORT WATCHERS PER_CONNECTION REQUEST_HEX LIMIT_SECONDS [KEY VALUE]...
// stdout: "ready" once every stream has its first message, then one JSON line with the results.
import http2 from "node:http2";

const [port, watchers, perConnection, requestHex, limit, ...pairs] = process.argv.slice(2);
const count = Number(watchers);
const request = Buffer.from(requestHex, "hex");
const frame = Buffer.alloc(5 + request.length);
frame.writeUInt32BE(request.length, 1);
request.copy(frame, 5);
const headers = {
  ":method": "POST",
  ":path": "/wallwhale.v1.DownloadService/WatchDownload",
  "content-type": "application/grpc",
  te: "trailers",
};
for (let i = 0; i + 1 < pairs.length; i += 2) headers[pairs[i]] = pairs[i + 1];

const KINDS = { 4: "state", 5: "progress", 6: "log", 7: "heartbeat", 8: "finished" };
const result = {
  connected: 0, finished: 0, messages: 0, replayed: 0, errors: {},
  sequences: [], latencies: [], progress: [], cpu_seconds: 0, wall_seconds: 0,
};
let counting = false;
let settled = 0;
let ended = 0;
let cpuStart, wallStart;

function varint(buffer, at) {
  let value = 0, shift = 1;
  for (;;) {
    const byte = buffer[at++];
    value += (byte & 0x7f) * shift;
    if (byte < 0x80) return [value, at];
    shift *= 128;
  }
}

// The fields of one WatchDownloadResponse the bench reads.
function decode(message) {
  let sequence = 0, seconds = 0, nanos = 0, kind = "", at = 0;
  while (at < message.length) {
    let key;
    [key, at] = varint(message, at);
    const field = Math.floor(key / 8), type = key & 7;
    if (type === 0) {
      let value;
      [value, at] = varint(message, at);
      if (field === 1) sequence = value;
    } else if (type === 2) {
      let length;
      [length, at] = varint(message, at);
      if (field === 2) {
        for (let inner = at; inner < at + length; ) {
          let innerKey, value;
          [innerKey, inner] = varint(message, inner);
          [value, inner] = varint(message, inner);
          if (innerKey >> 3 === 1) seconds = value;
          else if (innerKey >> 3 === 2) nanos = value;
        }
      } else if (KINDS[field]) kind = KINDS[field];
      at += length;
    } else throw new Error(`unexpected wire type ${type}`);
  }
  return { sequence, written: seconds + nanos / 1e9, kind };
}

function settle() {
  settled += 1;
  if (settled === count) {
    cpuStart = process.cpuUsage();
    wallStart = performance.now();
    counting = true;
    process.stdout.write("ready\n");
  }
}

function finish() {
  ended += 1;
  if (ended < count) return;
  const cpu = process.cpuUsage(cpuStart);
  result.cpu_seconds = (cpu.user + cpu.system) / 1e6;
  result.wall_seconds = (performance.now() - wallStart) / 1000;
  process.stdout.write(JSON.stringify(result) + "\n");
  for (const session of sessions) session.close();
}

const sessions = [];
for (let i = 0; i < Math.ceil(count / Number(perConnection)); i++) {
  const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 1 << 20 } });
  session.on("error", () => {});
  sessions.push(session);
}

function watch(number) {
  const stream = sessions[number % sessions.length].request(headers);
  let first = null;
  let pending = Buffer.alloc(0);
  let done = false;
  const end = (error) => {
    if (done) return;
    done = true;
    if (error) result.errors[error] = (result.errors[error] || 0) + 1;
    if (first === null) settle();
    finish();
  };
  stream.on("data", (chunk) => {
    const received = (performance.timeOrigin + performance.now()) / 1000;
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 5) {
      const length = pending.readUInt32BE(1);
      if (pending.length < 5 + length) break;
      const event = decode(pending.subarray(5, 5 + length));
      pending = pending.subarray(5 + length);
      if (counting) result.messages += 1;
      if (first === null) {
        first = received; // replayed history: the stream is registered with the hub
        result.connected += 1;
        settle();
      }
      if (event.kind === "progress" || event.kind === "log") {
        if (event.written <= first) {
          result.replayed += 1;
          continue;
        }
        result.sequences.push(event.sequence);
        result.latencies.push((received - event.written) * 1000);
        result.progress.push(event.kind === "progress" ? 1 : 0);
      } else if (event.kind === "finished") result.finished += 1;
    }
  });
  stream.on("trailers", (trailers) => {
    const status = trailers["grpc-status"];
    end(status && status !== "0" ? `status ${status}: ${trailers["grpc-message"] || ""}` : null);
  });
  stream.on("close", () => end(null));
  stream.on("error", (error) => end(String(error.code || error)));
  stream.end(frame);
}

for (let n = 0; n < count; n++) watch(n);
setTimeout(() => {
  result.errors["timed out before the final event"] = count - ended;
  ended = count - 1;
  finish();
  process.exit(0);
}, Number(limit) * 1000).unref();
