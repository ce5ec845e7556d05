/**
 * A real `clearance serve` for the tests (as tests/serverproc.py does for the Python suite):
 * a free port, a temporary SQLite database, the policy in test/fixtures, keys made with
 * `clearance keys create`, readiness through /healthz.
 *
 * The binary is `$CLEARANCE_BIN`, or `../../.venv/bin/clearance` from this package.
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The package root (this file runs from dist/test/). */
export const PACKAGE_ROOT = resolve(fileURLToPath(new URL("../../", import.meta.url)));
export const POLICY = join(PACKAGE_ROOT, "test", "fixtures", "clearance.yaml");

export function clearanceBin(): string {
  const bin = process.env.CLEARANCE_BIN ?? resolve(PACKAGE_ROOT, "../../.venv/bin/clearance");
  if (!existsSync(bin)) {
    throw new Error(
      `the Clearance CLI is not at ${bin}: run \`make install\` at the repository root, ` +
        "or set CLEARANCE_BIN to the `clearance` executable",
    );
  }
  return bin;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export class Gateway {
  readonly dir = mkdtempSync(join(tmpdir(), "clearance-openclaw-"));
  readonly databaseUrl = `sqlite:///${join(this.dir, "clearance.db")}`;
  readonly log = join(this.dir, "serve.log");
  readonly bin = clearanceBin();
  port = 0;
  private proc: ChildProcess | undefined;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private env(): NodeJS.ProcessEnv {
    return { ...process.env, CLEARANCE_DATABASE_URL: this.databaseUrl, PYTHONUNBUFFERED: "1" };
  }

  /** `clearance keys create --agent NAME` or `--person ID`; returns the key (shown once). */
  async createKey(kind: "agent" | "person", subject: string): Promise<string> {
    const { stdout } = await run(this.bin, ["keys", "create", `--${kind}`, subject, "--config", POLICY], {
      env: this.env(),
    });
    const token = stdout.trim().split("\n").pop()?.trim() ?? "";
    if (!token.startsWith("clr_")) throw new Error(`keys create printed no key: ${stdout}`);
    return token;
  }

  /** The audit trail, through `clearance audit export` (JSON lines). */
  async auditEntries(): Promise<Array<Record<string, unknown>>> {
    const { stdout } = await run(this.bin, ["audit", "export", "--config", POLICY], {
      env: this.env(),
    });
    return stdout
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** Start (again): on a free port the first time, on the same port after `kill`. */
  async start(timeoutMs = 30_000): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const out = openSync(this.log, "a");
    this.proc = spawn(this.bin, ["serve", "--config", POLICY, "--port", String(this.port)], {
      env: this.env(),
      stdio: ["ignore", out, out],
    });
    closeSync(out);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`clearance serve exited early:\n${this.tail()}`);
      try {
        const response = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(500) });
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`clearance serve did not start:\n${this.tail()}`);
  }

  tail(): string {
    try {
      return readFileSync(this.log, "utf8").slice(-2000);
    } catch {
      return "(no log)";
    }
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
  }

  /** kill -9: no shutdown handlers — what a crash looks like. */
  async kill(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    }
  }

  async cleanup(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Call the API as someone (an approver's key, or the agent's). */
  async api(method: string, path: string, key: string, body?: unknown): Promise<{ status: number; body: any }> {
    const response = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }
}
