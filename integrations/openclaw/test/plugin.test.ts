/**
 * The plugin against a real `clearance serve`, driven through a stub of OpenClaw's plugin
 * host (openclaw-stub.ts). Each test's first line says the behaviour it proves.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import plugin, { CONFIG_SCHEMA } from "../src/index.js";
import type { PluginHookToolContext } from "../src/openclaw.js";
import { freePort, Gateway, PACKAGE_ROOT } from "./gateway.js";
import { StubHost } from "./openclaw-stub.js";

let gw: Gateway;
let agentKey: string;
let aliceKey: string;
let callSeq = 0;

before(async () => {
  gw = new Gateway();
  agentKey = await gw.createKey("agent", "openclaw-bot");
  aliceKey = await gw.createKey("person", "alice");
  await gw.start();
});

after(async () => {
  await gw?.cleanup();
});

function load(overrides: Record<string, unknown> = {}): StubHost {
  const host = new StubHost("clearance", {
    url: gw.url,
    apiKey: agentKey,
    users: { "telegram:1003": "carol" },
    actions: { pay: "payments.transfer", refund: "payments.refund" },
    hookTimeoutMs: 20_000,
    requestTimeoutMs: 2_000,
    ...overrides,
  });
  host.load(plugin);
  return host;
}

function ctx(toolName: string, extra: Partial<PluginHookToolContext> = {}): PluginHookToolContext {
  callSeq += 1;
  return {
    agentId: "main",
    sessionKey: "agent:main:telegram:direct:1003",
    sessionId: "session-1",
    runId: "run-1",
    toolName,
    toolCallId: `call_${process.pid}_${callSeq}`,
    requester: { channel: "telegram", accountId: "default", senderId: "1003", senderIsOwner: false },
    ...extra,
  };
}

function event(c: PluginHookToolContext, params: Record<string, unknown>) {
  return { toolName: c.toolName, params, runId: c.runId, toolCallId: c.toolCallId };
}

/** The tool the stub host runs when the plugin lets a call through; counts its runs. */
function tool(result: unknown = { ok: true }) {
  const calls: Array<Record<string, unknown>> = [];
  const execute = async (params: Record<string, unknown>) => {
    calls.push(params);
    if (result instanceof Error) throw result;
    return result;
  };
  return { calls, execute };
}

/** Poll the approver's view until the pending approval for these params appears. */
async function pendingFor(action: string, params: Record<string, unknown>): Promise<any> {
  const want = JSON.stringify(params);
  for (let i = 0; i < 400; i++) {
    const { body } = await gw.api("GET", "/v1/approvals?state=pending", aliceKey);
    const found = body.approvals.find((a: any) => a.action === action && JSON.stringify(a.params) === want);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no pending approval for ${action} ${want}`);
}

async function approvalsFor(action: string, params: Record<string, unknown>): Promise<any[]> {
  const want = JSON.stringify(params);
  const { body } = await gw.api("GET", "/v1/approvals", agentKey);
  return body.approvals.filter((a: any) => a.action === action && JSON.stringify(a.params) === want);
}

/** A local HTTP server that answers every request with `reply` (or never, when null). */
async function fakeGateway(reply: { status: number; type: string; body: string } | null): Promise<{ url: string; close: () => Promise<void> }> {
  const held: Array<() => void> = [];
  const server: Server = createServer((req, res) => {
    req.resume();
    if (reply === null) {
      held.push(() => res.destroy());
      return;
    }
    res.writeHead(reply.status, { "content-type": reply.type });
    res.end(reply.body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        held.forEach((f) => f());
        server.close(() => r());
      }),
  };
}

describe("registration", () => {
  it("registers a before_tool_call gate with its budget and priority, and an after_tool_call observer", () => {
    const host = load({ hookTimeoutMs: 45_000, priority: 500 });
    const gates = host.registered("before_tool_call");
    assert.equal(gates.length, 1);
    assert.equal(gates[0]?.timeoutMs, 45_000);
    assert.equal(gates[0]?.priority, 500);
    assert.equal(host.registered("after_tool_call").length, 1);
  });

  it("ships a manifest whose config schema is the one the code validates against", () => {
    const manifest = JSON.parse(readFileSync(join(PACKAGE_ROOT, "openclaw.plugin.json"), "utf8"));
    assert.equal(manifest.id, plugin.id);
    assert.deepEqual(manifest.configSchema, CONFIG_SCHEMA);
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8"));
    assert.deepEqual(pkg.openclaw.extensions, ["./dist/src/index.js"]);
    assert.deepEqual(pkg.dependencies ?? {}, {});
  });

  it("blocks every tool call when the plugin is misconfigured, instead of letting them through", async () => {
    const host = new StubHost("clearance", { apiKey: "clr_x" });
    host.load(plugin);
    const t = tool();
    const c = ctx("read");
    const outcome = await host.callTool(event(c, { path: "/etc/hosts" }), c, t.execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /misconfigured.*'url' is required/);
    assert.equal(t.calls.length, 0);
    assert.ok(host.logs.some((l) => l.level === "error" && l.message.includes("'url' is required")));
  });

  it("refuses unknown settings and a budget too small for a check and a release", async () => {
    for (const config of [
      { url: "http://127.0.0.1:1", apiKey: "clr_x", timeout: 5 },
      { url: "http://127.0.0.1:1", apiKey: "clr_x", hookTimeoutMs: 1_000, requestTimeoutMs: 600 },
    ]) {
      const host = new StubHost("clearance", config);
      host.load(plugin);
      const c = ctx("read");
      const outcome = await host.callTool(event(c, {}), c, tool().execute);
      assert.equal(outcome.ran, false, JSON.stringify(config));
    }
  });
});

describe("immediate decisions", () => {
  it("lets an allowed call run and returns nothing from the hook", async () => {
    const host = load();
    const c = ctx("read");
    assert.deepEqual(await host.runBeforeToolCall(event(c, { path: "README.md" }), c), {});
    const t = tool("file contents");
    const outcome = await host.callTool(event(c, { path: "README.md" }), c, t.execute);
    assert.deepEqual(outcome, { ran: true, result: "file contents" });
    assert.equal(t.calls.length, 1);
  });

  it("reports what an allowed call did beside the check that allowed it", async () => {
    const host = load();
    const c = ctx("read");
    const outcome = await host.callTool(event(c, { path: "NOTES.md" }), c, tool("notes").execute);
    assert.deepEqual(outcome, { ran: true, result: "notes" });
    const entries = await gw.auditEntries();
    const last = (pick: (e: Record<string, unknown>) => boolean) => [...entries].reverse().find(pick);
    const check = last((e) => e.kind === "check" && e.action === "openclaw.read");
    const result = last((e) => e.kind === "execution.result");
    assert.ok(check && result, "a check and a result entry");
    const data = result.data as Record<string, unknown>;
    assert.equal(data.decision_id, (check.data as Record<string, unknown>).decision_id);
    assert.equal(data.state, "succeeded");
    assert.equal(data.result, "notes");
    assert.equal(result.params_hash, check.params_hash);
  });

  it("blocks a denied call with the policy's reason", async () => {
    const host = load();
    const c = ctx("delete_file");
    const t = tool();
    const outcome = await host.callTool(event(c, { path: "/data" }), c, t.execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /^Clearance denied this call: no-deletes: The agent never deletes files$/);
    assert.equal(t.calls.length, 0);
  });

  it("blocks a blocked call and says an alert was raised", async () => {
    const host = load();
    const c = ctx("upload");
    const t = tool();
    const outcome = await host.callTool(event(c, { host: "evil.example" }), c, t.execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /^Clearance blocked this call and raised an alert: no-exfiltration: Uploading/);
    assert.equal(t.calls.length, 0);
  });

  it("blocks a tool no rule names (the policy's default deny)", async () => {
    const host = load();
    const c = ctx("exec");
    const outcome = await host.callTool(event(c, { command: "rm -rf /" }), c, tool().execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /^Clearance denied this call/);
  });

  it("blocks a requester who is not mapped to a person when requireKnownUser is on", async () => {
    const host = load({ requireKnownUser: true });
    const c = ctx("read", { requester: { channel: "telegram", senderId: "999" } });
    const outcome = await host.callTool(event(c, { path: "a" }), c, tool().execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /requester telegram:999 is not mapped/);
  });
});

describe("approvals", () => {
  it("waits while an approver approves, releases the exact call, runs it and reports its result", async () => {
    const host = load();
    const c = ctx("pay");
    const params = { amount: 1201, payee: "acme" };
    const t = tool({ transfer: "tr_1", status: "sent" });
    const running = host.callTool(event(c, params), c, t.execute);
    const pending = await pendingFor("payments.transfer", params);
    assert.equal(t.calls.length, 0, "the tool must not run before the decision");
    assert.deepEqual(pending.actor, {
      agent: "openclaw-bot",
      user: "carol",
      session: "agent:main:telegram:direct:1003",
      openclaw_agent: "main",
    });
    assert.equal(pending.requester, "carol");
    const vote = await gw.api("POST", `/v1/approvals/${pending.id}/decisions`, aliceKey, { decision: "approve", comment: "ok" });
    assert.equal(vote.status, 200);
    const outcome = await running;
    assert.deepEqual(outcome, { ran: true, result: { transfer: "tr_1", status: "sent" } });
    const { body } = await gw.api("GET", `/v1/approvals/${pending.id}`, agentKey);
    assert.ok(body.released_at, "the approved call was released");
    assert.equal(body.execution_state, "succeeded");
    assert.equal(body.execution_result, '{"transfer":"tr_1","status":"sent"}');
  });

  it("reports a failed execution with the tool's error", async () => {
    const host = load();
    const c = ctx("pay");
    const params = { amount: 1202, payee: "acme" };
    const running = host.callTool(event(c, params), c, tool(new Error("bank API said 502")).execute);
    const pending = await pendingFor("payments.transfer", params);
    await gw.api("POST", `/v1/approvals/${pending.id}/decisions`, aliceKey, { decision: "approve" });
    const outcome = await running;
    assert.deepEqual(outcome, { ran: true, error: "bank API said 502" });
    const { body } = await gw.api("GET", `/v1/approvals/${pending.id}`, agentKey);
    assert.equal(body.execution_state, "failed");
    assert.equal(body.execution_result, "bank API said 502");
  });

  it("blocks a call the approver denies, naming who and why", async () => {
    const host = load();
    const c = ctx("pay");
    const params = { amount: 1203, payee: "shady" };
    const t = tool();
    const running = host.callTool(event(c, params), c, t.execute);
    const pending = await pendingFor("payments.transfer", params);
    await gw.api("POST", `/v1/approvals/${pending.id}/decisions`, aliceKey, { decision: "deny", comment: "unknown payee" });
    const outcome = await running;
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /^Clearance: payments\.transfer was denied by Alice Ng.*unknown payee/);
    assert.equal(t.calls.length, 0);
  });

  it("answers within its budget while nobody decides, then a retry uses the same approval once approved", async () => {
    const host = load({ hookTimeoutMs: 3_000, requestTimeoutMs: 1_000 });
    const params = { amount: 1204, payee: "acme" };
    const first = ctx("pay");
    const t = tool({ ok: 1 });
    const outcome = await host.callTool(event(first, params), first, t.execute);
    assert.equal(outcome.ran, false);
    const reason = outcome.ran ? "" : outcome.blockReason;
    assert.match(reason, /is waiting for approval apr_\w+ — pending/, "the plugin's own answer, not the host's timeout");
    assert.match(reason, /Try the same call again/);
    const [pending] = await approvalsFor("payments.transfer", params);
    await gw.api("POST", `/v1/approvals/${pending.id}/decisions`, aliceKey, { decision: "approve" });

    const retry = ctx("pay");
    const again = await host.callTool(event(retry, params), retry, t.execute);
    assert.deepEqual(again, { ran: true, result: { ok: 1 } });
    assert.equal((await approvalsFor("payments.transfer", params)).length, 1, "no second approval");
  });

  it("finds the same approval after an OpenClaw restart, through the tool call id as idempotency key", async () => {
    const params = { amount: 1205, payee: "acme" };
    const c = ctx("pay");
    const before = load({ hookTimeoutMs: 2_500, requestTimeoutMs: 1_000 });
    const one = await before.runBeforeToolCall(event(c, params), c);
    assert.equal(one.block, true);
    const restarted = load({ hookTimeoutMs: 2_500, requestTimeoutMs: 1_000 });
    const two = await restarted.runBeforeToolCall(event(c, params), c);
    assert.equal(two.block, true);
    const found = await approvalsFor("payments.transfer", params);
    assert.equal(found.length, 1);
    assert.ok(two.blockReason?.includes(found[0].id));
  });

  it("blocks when the approval expires before anyone decides", async () => {
    const host = load();
    const c = ctx("refund");
    const t = tool();
    const outcome = await host.callTool(event(c, { amount: 5, order: "o-1" }), c, t.execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /the approval for payments\.refund expired/);
    assert.equal(t.calls.length, 0);
  });

  it("withdraws the request when OpenClaw cancels the tool call while it waits", async () => {
    const host = load();
    const controller = new AbortController();
    const c = ctx("pay", { abortSignal: controller.signal });
    const params = { amount: 1206, payee: "acme" };
    const running = host.runBeforeToolCall(event(c, params), c);
    const pending = await pendingFor("payments.transfer", params);
    controller.abort();
    const result = await running;
    assert.equal(result.block, true);
    assert.match(result.blockReason ?? "", /was cancelled before a decision/);
    const { body } = await gw.api("GET", `/v1/approvals/${pending.id}`, agentKey);
    assert.equal(body.state, "cancelled");
  });
});

describe("failing closed", () => {
  it("blocks when the gateway cannot be reached", async () => {
    const port = await freePort();
    const host = load({ url: `http://127.0.0.1:${port}` });
    const c = ctx("read");
    const t = tool();
    const outcome = await host.callTool(event(c, {}), c, t.execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /not run \(fail closed\): cannot reach the gateway/);
    assert.equal(t.calls.length, 0);
  });

  it("blocks on an HTTP 500 from the gateway", async () => {
    const fake = await fakeGateway({ status: 500, type: "text/html", body: "<h1>Internal Server Error</h1>" });
    try {
      const host = load({ url: fake.url });
      const c = ctx("read");
      const outcome = await host.callTool(event(c, {}), c, tool().execute);
      assert.equal(outcome.ran, false);
      assert.match(outcome.ran ? "" : outcome.blockReason, /fail closed\): the gateway answered HTTP 500/);
    } finally {
      await fake.close();
    }
  });

  it("blocks on a 200 answer that is not a decision", async () => {
    for (const body of ['{"effect":"maybe","rules":[],"reasons":[],"decision_id":"d"}', "not json", "[]"]) {
      const fake = await fakeGateway({ status: 200, type: "application/json", body });
      try {
        const host = load({ url: fake.url });
        const c = ctx("read");
        const outcome = await host.callTool(event(c, {}), c, tool().execute);
        assert.equal(outcome.ran, false, body);
        assert.match(outcome.ran ? "" : outcome.blockReason, /fail closed\): the gateway/);
      } finally {
        await fake.close();
      }
    }
  });

  it("blocks within its budget when the gateway accepts the connection but never answers", async () => {
    const fake = await fakeGateway(null);
    try {
      const host = load({ url: fake.url, hookTimeoutMs: 2_000, requestTimeoutMs: 300 });
      const c = ctx("read");
      const outcome = await host.callTool(event(c, {}), c, tool().execute);
      assert.equal(outcome.ran, false);
      assert.match(outcome.ran ? "" : outcome.blockReason, /no answer from the gateway within 300 ms/);
    } finally {
      await fake.close();
    }
  });

  it("blocks a call whose parameters cannot be sent as JSON", async () => {
    const host = load();
    const c = ctx("read");
    const t = tool();
    const outcome = await host.callTool(event(c, { size: 10n }), c, t.execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /not run \(fail closed\): .*BigInt/);
    assert.equal(t.calls.length, 0);
  });

  it("blocks when the gateway rejects the API key", async () => {
    const host = load({ apiKey: "clr_nope_nope" });
    const c = ctx("read");
    const outcome = await host.callTool(event(c, {}), c, tool().execute);
    assert.equal(outcome.ran, false);
    assert.match(outcome.ran ? "" : outcome.blockReason, /HTTP 401/);
  });
});

describe("durability", () => {
  it("keeps waiting through a gateway crash and restart, then runs the call once it is approved", async () => {
    const host = load({ hookTimeoutMs: 60_000, requestTimeoutMs: 2_000 });
    const c = ctx("pay");
    const params = { amount: 1207, payee: "acme" };
    const t = tool({ ok: "after restart" });
    const running = host.callTool(event(c, params), c, t.execute);
    const pending = await pendingFor("payments.transfer", params);
    await gw.kill();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(t.calls.length, 0);
    await gw.start();
    const vote = await gw.api("POST", `/v1/approvals/${pending.id}/decisions`, aliceKey, { decision: "approve" });
    assert.equal(vote.status, 200);
    assert.deepEqual(await running, { ran: true, result: { ok: "after restart" } });
    const { body } = await gw.api("GET", `/v1/approvals/${pending.id}`, agentKey);
    assert.equal(body.execution_state, "succeeded");
  });
});
