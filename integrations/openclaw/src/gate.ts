/**
 * The two hooks: `before_tool_call` asks Clearance and turns its answer into OpenClaw's
 * result; `after_tool_call` reports what a call did (approved, or allowed outright), for the
 * audit trail.
 *
 * Approvals wait inside the hook, within the budget the plugin registers with OpenClaw
 * (`hookTimeoutMs`); see README.md ("Why the hook waits instead of `requireApproval`").
 */

import { createHash } from "node:crypto";

import { type Approval, ClearanceClient, type Decision, GatewayError } from "./client.js";
import type { ClearanceSettings } from "./config.js";
import type {
  PluginHookAfterToolCallEvent,
  PluginHookBeforeToolCallEvent,
  PluginHookBeforeToolCallResult,
  PluginHookToolContext,
  PluginLogger,
} from "./openclaw.js";

/** What Clearance keeps of a reported result (RESULT_MAX_CHARS in approvals/workflow.py). */
export const RESULT_MAX_CHARS = 4000;
const MAX_REMEMBERED = 1000;
const RETRY_PAUSE_MS = 250;
/** Answer this long before OpenClaw's own budget runs out (it would block with its own reason). */
const BUDGET_MARGIN_MS = 250;

type Call = {
  action: string;
  params: Record<string, unknown>;
  actor: Record<string, string>;
};

/** JSON with object keys sorted, so equal calls give equal strings. */
export function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function blocked(reason: string): PluginHookBeforeToolCallResult {
  return { block: true, blockReason: reason };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** A bounded map: the oldest entry goes when it is full. */
class Recent<V> {
  private readonly items = new Map<string, V>();
  get(key: string): V | undefined {
    return this.items.get(key);
  }
  set(key: string, value: V): void {
    this.items.delete(key);
    this.items.set(key, value);
    if (this.items.size > MAX_REMEMBERED) {
      const oldest = this.items.keys().next().value;
      if (oldest !== undefined) this.items.delete(oldest);
    }
  }
  delete(key: string): void {
    this.items.delete(key);
  }
}

export class ClearanceGate {
  readonly client: ClearanceClient;
  /** Approvals still open for a call (by action, params and actor): a retry reuses them. */
  private readonly open = new Recent<string>();
  /** Released approvals by tool call, until `after_tool_call` reports their result. */
  private readonly released = new Recent<string>();
  /** Calls the policy allowed outright, by tool call: their results go beside the check. */
  private readonly allowed = new Recent<{ decisionId: string; call: Call }>();

  constructor(
    private readonly settings: ClearanceSettings,
    private readonly logger: PluginLogger,
    private readonly now: () => number = Date.now,
  ) {
    this.client = new ClearanceClient(settings.url, settings.apiKey);
  }

  actionFor(toolName: string): string {
    return this.settings.actions[toolName] ?? this.settings.actionPrefix + toolName;
  }

  /** The requester as a Clearance person, or undefined when the mapping does not know them. */
  personFor(ctx: PluginHookToolContext): string | undefined {
    const r = ctx.requester;
    if (!r?.channel || !r.senderId) return undefined;
    return this.settings.users[`${r.channel}:${r.senderId}`];
  }

  /** OpenClaw's identity of the caller, as Clearance's `actor` (the key fixes `actor.agent`). */
  actorFor(ctx: PluginHookToolContext): Record<string, string> {
    const actor: Record<string, string> = {};
    const person = this.personFor(ctx);
    if (person) actor.user = person;
    if (ctx.sessionKey) actor.session = ctx.sessionKey;
    if (ctx.agentId) actor.openclaw_agent = ctx.agentId;
    return actor;
  }

  contextFor(event: PluginHookBeforeToolCallEvent, ctx: PluginHookToolContext): Record<string, unknown> {
    const r = ctx.requester;
    return {
      openclaw: {
        agent_id: ctx.agentId,
        session_key: ctx.sessionKey,
        session_id: ctx.sessionId,
        run_id: event.runId ?? ctx.runId,
        tool_name: event.toolName,
        tool_call_id: event.toolCallId ?? ctx.toolCallId,
        channel_id: ctx.channelId,
        derived_paths: event.derivedPaths ? [...event.derivedPaths] : undefined,
        requester: r
          ? {
              channel: r.channel,
              account_id: r.accountId,
              sender_id: r.senderId,
              sender_is_owner: r.senderIsOwner,
              role_ids: r.roleIds ? [...r.roleIds] : undefined,
            }
          : undefined,
      },
    };
  }

  /** The tool call id as an idempotency key, scoped to the agent, session and run. */
  idempotencyKey(event: PluginHookBeforeToolCallEvent, ctx: PluginHookToolContext): string | undefined {
    const callId = event.toolCallId ?? ctx.toolCallId;
    if (!callId) return undefined;
    const scope = sha256([ctx.agentId, ctx.sessionKey, event.runId ?? ctx.runId, callId].join("\u001f"));
    const key = `openclaw:${callId}:${scope.slice(0, 16)}`;
    return key.length <= 255 ? key : `openclaw:${scope}`;
  }

  private callKey(
    event: { toolName: string; params: Record<string, unknown>; toolCallId?: string },
    ctx: PluginHookToolContext,
  ): string {
    const callId = event.toolCallId ?? ctx.toolCallId;
    if (callId) return `id:${ctx.sessionKey ?? ""}:${callId}`;
    return `call:${ctx.sessionKey ?? ""}:${event.toolName}:${sha256(canonical(event.params))}`;
  }

  // -- before_tool_call ---------------------------------------------------------------------
  readonly beforeToolCall = async (
    event: PluginHookBeforeToolCallEvent,
    ctx: PluginHookToolContext,
  ): Promise<PluginHookBeforeToolCallResult | void> => {
    const started = this.now();
    const deadline = started + this.settings.hookTimeoutMs - BUDGET_MARGIN_MS;
    const action = this.actionFor(event.toolName);
    const actor = this.actorFor(ctx);
    const call: Call = { action, params: event.params ?? {}, actor };
    const signal = ctx.abortSignal;

    if (this.settings.requireKnownUser && !actor.user) {
      const r = ctx.requester;
      const who = r?.channel && r.senderId ? `${r.channel}:${r.senderId}` : "unknown (no requester)";
      return blocked(
        `Clearance: ${action} was not run: the requester ${who} is not mapped to a Clearance ` +
          "person (plugin setting 'users'), and requireKnownUser is on.",
      );
    }

    let binding = "";
    let approvalId: string | undefined;
    try {
      binding = sha256(canonical(call));
      let approval: Approval | undefined;
      const reused = this.open.get(binding);
      if (reused) {
        approval = await this.reuse(reused, binding, deadline, signal);
        if (approval) approvalId = approval.id;
      }
      if (!approvalId) {
        const key = this.idempotencyKey(event, ctx);
        const decision = await this.client.check(
          {
            ...call,
            context: this.contextFor(event, ctx),
            labels: this.settings.labels,
            ...(key ? { idempotency_key: key } : {}),
          },
          this.budget(deadline),
          signal,
        );
        const answer = this.immediate(decision);
        if (decision.effect === "allow") {
          this.allowed.set(this.callKey(event, ctx), { decisionId: decision.decision_id, call });
        }
        if (answer !== "approve") return answer;
        if (!decision.approval_id) {
          return blocked(
            `Clearance: ${action} was not run: the gateway asked for approval but returned no ` +
              "approval id (fail closed).",
          );
        }
        approvalId = decision.approval_id;
        this.open.set(binding, approvalId);
        this.logger.info(`clearance: ${action} waits for approval ${approvalId}: ${decision.reasons.join("; ")}`);
      }
      approval = await this.waitFor(approvalId, approval, deadline, signal);
      return await this.settle(approval, call, binding, this.callKey(event, ctx), deadline, signal);
    } catch (err) {
      if (err instanceof GatewayError && err.kind === "aborted") {
        if (approvalId) await this.withdraw(approvalId, binding);
        return blocked(`Clearance: ${action} was cancelled before a decision; it did not run.`);
      }
      const why = err instanceof Error ? err.message : String(err);
      this.logger.warn(`clearance: ${action} blocked, gateway problem: ${why}`);
      const pendingNote = approvalId ? ` Approval ${approvalId} stays open.` : "";
      return blocked(`Clearance: ${action} was not run (fail closed): ${why}.${pendingNote}`);
    }
  };

  /** The answer for allow/deny/block, or "approve" when people must decide. */
  private immediate(decision: Decision): PluginHookBeforeToolCallResult | void | "approve" {
    const why = decision.reasons.length ? decision.reasons.join("; ") : "no rule gave a reason";
    switch (decision.effect) {
      case "allow":
        return undefined;
      case "deny":
        return blocked(`Clearance denied this call: ${why}`);
      case "block":
        return blocked(`Clearance blocked this call${decision.alert.length ? " and raised an alert" : ""}: ${why}`);
      case "approve":
        return "approve";
    }
  }

  /** A remembered approval for the same call: still usable (pending or approved, unreleased)? */
  private async reuse(
    id: string,
    binding: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<Approval | undefined> {
    try {
      const approval = await this.client.get(id, this.budget(deadline), signal);
      if (approval.state === "pending" || (approval.state === "approved" && !approval.released_at)) {
        return approval;
      }
    } catch (err) {
      if (!(err instanceof GatewayError && err.kind === "http" && err.status === 404)) throw err;
    }
    this.open.delete(binding);
    return undefined;
  }

  /**
   * Long-poll until the approval is decided, keeping `requestTimeoutMs` before `deadline` to
   * release the call; transient failures (no connection, 5xx) are retried until then.
   */
  private async waitFor(
    id: string,
    known: Approval | undefined,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<Approval> {
    if (known && known.state !== "pending") return known;
    const until = deadline - this.settings.requestTimeoutMs;
    let lastError: GatewayError | undefined;
    do {
      const left = Math.max(0, until - this.now());
      const pollMs = Math.min(left, 60_000);
      const httpMs = Math.max(1, Math.min(pollMs + this.settings.requestTimeoutMs, deadline - this.now()));
      try {
        const approval = await this.client.wait(id, pollMs / 1000, httpMs, signal);
        if (approval.state !== "pending") return approval;
        known = approval;
        lastError = undefined;
      } catch (err) {
        if (!(err instanceof GatewayError)) throw err;
        const transient = err.kind === "unreachable" || err.kind === "timeout" || (err.status ?? 0) >= 500;
        if (!transient) throw err;
        lastError = err;
        if (this.now() + RETRY_PAUSE_MS < until) await sleep(RETRY_PAUSE_MS, signal);
        if (signal?.aborted) throw new GatewayError("aborted", "the tool call was cancelled");
      }
    } while (this.now() < until);
    if (known) return known;
    throw lastError ?? new GatewayError("timeout", "no answer from the gateway while waiting");
  }

  /** Turn a waited-for approval into OpenClaw's answer; an approved call is released first. */
  private async settle(
    approval: Approval,
    call: Call,
    binding: string,
    callKey: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<PluginHookBeforeToolCallResult | void> {
    const { action } = call;
    switch (approval.state) {
      case "pending": {
        const warn = approval.warnings.length ? ` (${approval.warnings.join("; ")})` : "";
        return blocked(
          `Clearance: ${action} is waiting for approval ${approval.id} — ${approval.summary}${warn}. ` +
            "It did not run. Try the same call again once it is decided: it will use this approval.",
        );
      }
      case "denied": {
        this.open.delete(binding);
        const by = approval.votes.filter((v) => v.decision === "deny").map((v) => v.name);
        return blocked(
          `Clearance: ${action} was denied` +
            (by.length ? ` by ${by.join(", ")}` : "") +
            (approval.decided_reason ? `: ${approval.decided_reason}` : "") +
            ".",
        );
      }
      case "expired":
      case "cancelled":
        this.open.delete(binding);
        return blocked(
          `Clearance: the approval for ${action} ${approval.state === "expired" ? "expired" : "was cancelled"}` +
            (approval.decided_reason ? `: ${approval.decided_reason}` : "") +
            ". It did not run.",
        );
      case "approved": {
        if (approval.released_at) {
          this.open.delete(binding);
          return blocked(
            `Clearance: approval ${approval.id} already released its call; an approval runs one call only.`,
          );
        }
        await this.client.release(approval.id, call, this.budget(deadline), signal);
        this.open.delete(binding);
        this.released.set(callKey, approval.id);
        const by = approval.votes.filter((v) => v.decision === "approve").map((v) => v.name);
        this.logger.info(`clearance: ${action} approved${by.length ? ` by ${by.join(", ")}` : ""} (${approval.id})`);
        return undefined;
      }
    }
  }

  /** The run was cancelled while people were deciding: withdraw the request (best effort). */
  private async withdraw(id: string, binding: string): Promise<void> {
    this.open.delete(binding);
    try {
      await this.client.cancel(id, "the OpenClaw tool call was cancelled before a decision", this.settings.requestTimeoutMs);
    } catch (err) {
      this.logger.warn(`clearance: could not withdraw ${id}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private budget(deadline: number): number {
    return Math.max(1, Math.min(this.settings.requestTimeoutMs, deadline - this.now()));
  }

  // -- after_tool_call ----------------------------------------------------------------------
  readonly afterToolCall = async (
    event: PluginHookAfterToolCallEvent,
    ctx: PluginHookToolContext,
  ): Promise<void> => {
    const key = this.callKey(event, ctx);
    const approvalId = this.released.get(key);
    const allowed = approvalId ? undefined : this.allowed.get(key);
    if (!approvalId && !allowed) return;
    this.released.delete(key);
    this.allowed.delete(key);
    const subject = approvalId ?? `check ${allowed?.decisionId}`;
    let state: "succeeded" | "failed";
    let text: string | null;
    if (typeof event.error === "string" && event.error !== "") {
      state = "failed";
      text = event.error;
    } else if (event.result !== undefined) {
      state = "succeeded";
      text = serialise(event.result);
    } else {
      // OpenClaw's docs: neither result nor error is no evidence of success. Record nothing
      // rather than a guess; the trail shows the call released with no result.
      this.logger.warn(`clearance: ${event.toolName} ran under ${subject} but its outcome is unknown; no result reported`);
      return;
    }
    try {
      if (approvalId) {
        await this.client.result(approvalId, state, truncate(text), this.settings.requestTimeoutMs);
      } else if (allowed) {
        await this.client.checkResult(
          allowed.decisionId,
          allowed.call,
          state,
          truncate(text),
          this.settings.requestTimeoutMs,
        );
      }
    } catch (err) {
      this.logger.warn(
        `clearance: could not report the result of ${subject}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  };
}

function serialise(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function truncate(text: string | null): string | null {
  if (text === null || text.length <= RESULT_MAX_CHARS) return text;
  return text.slice(0, RESULT_MAX_CHARS - 1) + "…";
}
