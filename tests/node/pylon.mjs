// Shared helpers for the Node tests: a real `pylon serve` on free loopback ports, Python SDK
// participants in child processes (tests/node/participant.py, one JSON event per line), and
// waiting. Logs and configs go to test-output/node/.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { AccessToken, RoomServiceClient } from 'livekit-server-sdk';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const OUTPUT = path.join(ROOT, 'test-output', 'node');
export const API_KEY = 'testkey';
export const API_SECRET = 'pylon-node-secret-that-is-long-enough-0123456789';
const PYTHON = path.join(ROOT, '.venv', 'bin', 'python');
const PARTICIPANT = path.join(ROOT, 'tests', 'node', 'participant.py');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `cond()` until truthy; throw naming `what` after `timeoutMs`. */
export async function waitFor(cond, timeoutMs, what, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(intervalMs);
  }
}

const handedOut = new Set();

/**
 * A port `draw` finds free on loopback whose number was never handed out before, for TCP or
 * UDP: pylon refuses a config whose rtc.tcp_port is also rtc.udp_port or the HTTP port, and
 * the kernel can give a UDP and a TCP socket the same number.
 */
async function unseenPort(draw) {
  for (;;) {
    const port = await draw();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** A TCP port free on loopback now, never a number handed out before. */
export function freeTcpPort() {
  return unseenPort(
    () =>
      new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
          const { port } = s.address();
          s.close(() => resolve(port));
        });
      }),
  );
}

/** A UDP port free on loopback now, never a number handed out before. */
export function freeUdpPort() {
  return unseenPort(
    () =>
      new Promise((resolve, reject) => {
        const s = dgram.createSocket('udp4');
        s.once('error', reject);
        s.bind(0, '127.0.0.1', () => {
          const { port } = s.address();
          s.close(() => resolve(port));
        });
      }),
  );
}

function yamlScalar(v) {
  if (typeof v === 'boolean' || typeof v === 'number') return String(v);
  return JSON.stringify(String(v));
}

function toYaml(obj, indent = 0) {
  const pad = '  '.repeat(indent);
  return Object.entries(obj)
    .map(([k, v]) => {
      if (Array.isArray(v)) return `${pad}${k}: [${v.map(yamlScalar).join(', ')}]`;
      if (v && typeof v === 'object') return `${pad}${k}:\n${toYaml(v, indent + 1)}`;
      return `${pad}${k}: ${yamlScalar(v)}`;
    })
    .join('\n');
}

function safeName(name) {
  return name.replace(/[^A-Za-z0-9_-]/g, '_');
}

/** Start a server for test `name` with `extra` config merged over the defaults. */
/** Worker settings scripts/test.sh varies between runs of a suite. */
function rtcFromEnv() {
  const rtc = {};
  if (process.env.PYLON_TEST_WORKERS) rtc.workers = Number(process.env.PYLON_TEST_WORKERS);
  if (process.env.PYLON_TEST_SPREAD) rtc.room_spread_threshold = Number(process.env.PYLON_TEST_SPREAD);
  return rtc;
}

export async function startPylon(name, extra = {}) {
  const bin = process.env.PYLON_BIN || path.join(ROOT, 'target', 'debug', 'pylon');
  if (!fs.existsSync(bin)) throw new Error(`${bin} does not exist; run \`cargo build -p pylon\` first`);
  fs.mkdirSync(OUTPUT, { recursive: true });
  const httpPort = await freeTcpPort();
  const udpPort = await freeUdpPort();
  const tcpPort = await freeTcpPort();
  const config = {
    port: httpPort,
    bind_addresses: ['127.0.0.1'],
    rtc: { udp_port: udpPort, tcp_port: tcpPort, node_ip: '127.0.0.1', ...rtcFromEnv() },
    keys: { [API_KEY]: API_SECRET },
    logging: { level: 'debug' },
  };
  for (const [k, v] of Object.entries(extra)) {
    config[k] = v && typeof v === 'object' && !Array.isArray(v) && config[k] ? { ...config[k], ...v } : v;
  }
  const base = path.join(OUTPUT, safeName(name));
  fs.writeFileSync(`${base}.yaml`, `${toYaml(config)}\n`);
  const log = fs.openSync(`${base}.log`, 'w');
  const proc = spawn(bin, ['serve', '--config', `${base}.yaml`], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RUST_BACKTRACE: '1', NO_COLOR: '1' },
  });
  fs.closeSync(log);
  let exited = null;
  proc.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  await waitFor(
    () =>
      new Promise((resolve, reject) => {
        if (exited) reject(new Error(`pylon exited (${JSON.stringify(exited)}); see ${base}.log`));
        const c = net.connect(httpPort, '127.0.0.1');
        c.once('connect', () => {
          c.destroy();
          resolve(true);
        });
        c.once('error', () => resolve(false));
      }),
    20000,
    'pylon to listen',
  );
  const server = {
    name,
    httpPort,
    url: `ws://127.0.0.1:${httpPort}`,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    logPath: `${base}.log`,
    participants: [],
    /** A join token (roomJoin for `room`) plus any extra grants. */
    async token(identity, room, grants = {}, { name: displayName } = {}) {
      const at = new AccessToken(API_KEY, API_SECRET, { identity, name: displayName });
      at.addGrant({ roomJoin: true, room, ...grants });
      return at.toJwt();
    },
    /** A RoomServiceClient signing with the server's key (or sending `token` verbatim). */
    roomService({ token } = {}) {
      return token
        ? new RoomServiceClient(this.httpUrl, undefined, undefined, { token, failover: false })
        : new RoomServiceClient(this.httpUrl, API_KEY, API_SECRET, { failover: false });
    },
    log() {
      return fs.readFileSync(`${base}.log`, 'utf8');
    },
    /** Stop participants and the server; throws if the server died or panicked meanwhile. */
    async stop() {
      await Promise.all(this.participants.map((p) => p.stop()));
      const alive = exited === null;
      if (alive) {
        // SIGTERM drains; a node still hosting someone (a participant awaiting resume, say)
        // would wait for `drain.migrate_after`. The test is over: a second SIGTERM after a
        // moment exits at once, and SIGKILL if even that is not heard.
        const gone = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await Promise.race([gone, sleep(1000)]);
        if (exited === null) proc.kill('SIGTERM');
        await Promise.race([gone, sleep(10000)]);
        if (exited === null) proc.kill('SIGKILL');
      }
      if (!alive) throw new Error(`pylon died during the test (${JSON.stringify(exited)}); see ${base}.log`);
      if (this.log().includes('panicked')) throw new Error(`pylon panicked during the test; see ${base}.log`);
    },
  };
  return server;
}

/** A Python SDK participant in a child process; `events` holds what it printed. */
export class Participant {
  constructor(server, identity, proc, stderrPath) {
    this.server = server;
    this.identity = identity;
    this.proc = proc;
    this.stderrPath = stderrPath;
    this.events = [];
    this.exit = null;
    this.closed = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      });
    });
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line));
      } catch {
        this.events.push({ event: 'unparsed', line });
      }
    });
  }

  /** Join `room` as `identity` (optionally publishing camera + microphone). */
  static async start(server, identity, { room, publish = false, name, grants = {} } = {}) {
    const token = await server.token(identity, room, grants, { name });
    const stderrPath = path.join(OUTPUT, `${safeName(server.name)}-${safeName(identity)}.stderr`);
    const err = fs.openSync(stderrPath, 'w');
    const args = [PARTICIPANT, '--url', server.url, '--token', token, '--identity', identity];
    if (publish) args.push('--publish');
    const proc = spawn(PYTHON, args, { stdio: ['pipe', 'pipe', err] });
    // A participant that already exited (removed by the server, or the server stopped first)
    // cannot take commands; writing to it fails asynchronously with EPIPE. What it did is
    // judged from its events and exit, so the write error is not a test failure.
    proc.stdin.on('error', () => {});
    fs.closeSync(err);
    const p = new Participant(server, identity, proc, stderrPath);
    server.participants.push(p);
    await p.waitFor((e) => e.event === 'connected', 30000, `${identity} to connect`);
    if (publish) {
      await p.waitFor((e) => e.event === 'local_published' && e.track === 'microphone', 30000, `${identity} to publish`);
    }
    return p;
  }

  /** Throw if the process ended without being disconnected (an SDK crash), quoting stderr. */
  check() {
    if (this.exit && !this.events.some((e) => e.event === 'disconnected')) {
      const lines = fs.readFileSync(this.stderrPath, 'utf8').trim().split('\n');
      const panic = lines.findIndex((l) => l.includes('panicked'));
      const tail = panic >= 0 ? lines.slice(panic, panic + 2) : lines.slice(-6);
      const errors = this.events.filter((e) => e.event === 'error').map((e) => e.message);
      throw new Error(
        `${this.identity}'s SDK process ended (${JSON.stringify(this.exit)}) ${errors.join('; ')}\n${tail.join('\n')}`,
      );
    }
  }

  find(pred) {
    return this.events.filter(pred);
  }

  saw(match) {
    return this.events.some((e) => Object.entries(match).every(([k, v]) => JSON.stringify(e[k]) === JSON.stringify(v)));
  }

  /** Wait for an event matching `pred` (a function or a partial object); returns it. */
  async waitFor(pred, timeoutMs, what) {
    const test =
      typeof pred === 'function'
        ? pred
        : (e) => Object.entries(pred).every(([k, v]) => JSON.stringify(e[k]) === JSON.stringify(v));
    return waitFor(
      () => {
        const hit = this.events.find(test);
        if (hit) return hit;
        this.check();
        return null;
      },
      timeoutMs,
      what,
    );
  }

  /** Wait for a condition on this participant as a whole (fails fast if it crashed). */
  async until(cond, timeoutMs, what) {
    return waitFor(
      () => {
        this.check();
        return cond(this);
      },
      timeoutMs,
      what,
    );
  }

  frames(kind, key) {
    for (let i = this.events.length - 1; i >= 0; i -= 1) {
      const e = this.events[i];
      if (e.event === 'frames') return e[kind][key] ?? 0;
    }
    return 0;
  }

  /** Wait until `key`'s video frame count stops rising for `quietMs`; returns the count. */
  async framesStalled(key, quietMs = 2000, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    let last = this.frames('video', key);
    let since = Date.now();
    while (Date.now() < deadline) {
      await sleep(100);
      this.check();
      const now = this.frames('video', key);
      if (now !== last) {
        last = now;
        since = Date.now();
      } else if (Date.now() - since >= quietMs) {
        return now;
      }
    }
    throw new Error(`${this.identity} still decodes ${key} frames after ${timeoutMs / 1000} s`);
  }

  send(command) {
    this.proc.stdin.write(`${command}\n`);
  }

  async stop() {
    if (this.exit === null) {
      try {
        this.proc.stdin.end('quit\n');
      } catch {
        // already gone
      }
      await Promise.race([this.closed, sleep(15000)]);
      if (this.exit === null) {
        this.proc.kill('SIGKILL');
        await this.closed;
      }
    }
  }
}

/** Assert that `promise` rejects with a Twirp error of `code` and HTTP `status`. */
export async function expectTwirpError(promise, code, status) {
  try {
    await promise;
  } catch (e) {
    if (e.code !== code || e.status !== status) {
      throw new Error(`expected ${code}/${status}, got ${e.code}/${e.status}: ${e.message}`);
    }
    return e;
  }
  throw new Error(`expected ${code}/${status}, but the call succeeded`);
}
