/**
 * A small client for the Clearance HTTP API (Node's built-in fetch, nothing else). Every
 * failure — no answer, a timeout, an HTTP error, a body that is not what the API documents —
 * becomes a `GatewayError`, so the hook has one thing to turn into a block.
 */

export type Effect = "allow" | "deny" | "approve" | "block";
export type ApprovalState = "pending" | "approved" | "denied" | "expired" | "cancelled";

export type CheckRequest = {
  action: string;
  params: Record<string, unknown>;
  actor: Record<string, string>;
  context: Record<string, unknown>;
  labels: string[];
  idempotency_key?: string;
};

/** `POST /v1/checks` (DecisionOut in src/clearance/server/schemas.py). */
export type Decision = {
  effect: Effect;
  rules: string[];
  reasons: string[];
  decision_id: string;
  approval_id: string | null;
  state: string | null;
  expires_at: string | null;
  /** Who the gateway alerted about a blocked call. */
  alert: string[];
};

export type Vote = { person: string; name: string; decision: "approve" | "deny"; comment: string | null };

/** `GET /v1/approvals/{id}` and friends (ApprovalOut). */
export type Approval = {
  id: string;
  state: ApprovalState;
  action: string;
  votes: Vote[];
  decided_reason: string | null;
  released_at: string | null;
  summary: string;
  warnings: string[];
};

export type GatewayErrorKind = "unreachable" | "timeout" | "aborted" | "http" | "malformed";

export class GatewayError extends Error {
  override name = "GatewayError";
  constructor(
    readonly kind: GatewayErrorKind,
    message: string,
    readonly status?: number,
    readonly code?: string,
  ) {
    super(message);
  }
}

const EFFECTS = new Set<string>(["allow", "deny", "approve", "block"]);
const STATES = new Set<string>(["pending", "approved", "denied", "expired", "cancelled"]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function strings(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === "string");
}

function asDecision(body: unknown): Decision {
  if (
    !isObject(body) ||
    typeof body.effect !== "string" ||
    !EFFECTS.has(body.effect) ||
    !strings(body.rules) ||
    !strings(body.reasons) ||
    typeof body.decision_id !== "string"
  ) {
    throw new GatewayError("malformed", "the gateway's answer to a check is not a decision");
  }
  const approvalId = body.approval_id ?? null;
  if (approvalId !== null && typeof approvalId !== "string") {
    throw new GatewayError("malformed", "the gateway's decision has an invalid approval_id");
  }
  return {
    effect: body.effect as Effect,
    rules: body.rules,
    reasons: body.reasons,
    decision_id: body.decision_id,
    approval_id: approvalId,
    state: typeof body.state === "string" ? body.state : null,
    expires_at: typeof body.expires_at === "string" ? body.expires_at : null,
    alert: strings(body.alert) ? body.alert : [],
  };
}

function asApproval(body: unknown): Approval {
  if (
    !isObject(body) ||
    typeof body.id !== "string" ||
    typeof body.state !== "string" ||
    !STATES.has(body.state) ||
    typeof body.action !== "string" ||
    !Array.isArray(body.votes)
  ) {
    throw new GatewayError("malformed", "the gateway's answer is not an approval");
  }
  const votes: Vote[] = [];
  for (const v of body.votes) {
    if (isObject(v) && typeof v.person === "string" && (v.decision === "approve" || v.decision === "deny")) {
      votes.push({
        person: v.person,
        name: typeof v.name === "string" ? v.name : v.person,
        decision: v.decision,
        comment: typeof v.comment === "string" ? v.comment : null,
      });
    }
  }
  return {
    id: body.id,
    state: body.state as ApprovalState,
    action: body.action,
    votes,
    decided_reason: typeof body.decided_reason === "string" ? body.decided_reason : null,
    released_at: typeof body.released_at === "string" ? body.released_at : null,
    summary: typeof body.summary === "string" ? body.summary : body.state,
    warnings: strings(body.warnings) ? body.warnings : [],
  };
}

export class ClearanceClient {
  constructor(
    private readonly url: string,
    private readonly apiKey: string,
  ) {}

  /** Evaluate a call; a pending approval is created when the policy says approve. */
  async check(req: CheckRequest, timeoutMs: number, signal?: AbortSignal): Promise<Decision> {
    return asDecision(await this.request("POST", "/v1/checks", req, timeoutMs, signal));
  }

  async get(id: string, timeoutMs: number, signal?: AbortSignal): Promise<Approval> {
    return asApproval(await this.request("GET", `/v1/approvals/${enc(id)}`, undefined, timeoutMs, signal));
  }

  /** Long poll: answers when the approval is decided, or after `waitS` seconds as it stands. */
  async wait(id: string, waitS: number, timeoutMs: number, signal?: AbortSignal): Promise<Approval> {
    const path = `/v1/approvals/${enc(id)}/wait?timeout=${Math.max(0, Math.min(300, waitS)).toFixed(1)}`;
    return asApproval(await this.request("GET", path, undefined, timeoutMs, signal));
  }

  /** Claim the approved call: only the exact call approved, and only once. */
  async release(
    id: string,
    call: { action: string; params: Record<string, unknown>; actor: Record<string, string> },
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<Approval> {
    return asApproval(await this.request("POST", `/v1/approvals/${enc(id)}/release`, call, timeoutMs, signal));
  }

  async result(
    id: string,
    state: "succeeded" | "failed",
    result: string | null,
    timeoutMs: number,
  ): Promise<Approval> {
    return asApproval(
      await this.request("POST", `/v1/approvals/${enc(id)}/result`, { state, result }, timeoutMs),
    );
  }

  /** What an allowed call (no approval) did, recorded beside the check that allowed it. */
  async checkResult(
    decisionId: string,
    call: { action: string; params: Record<string, unknown>; actor: Record<string, string> },
    state: "succeeded" | "failed",
    result: string | null,
    timeoutMs: number,
  ): Promise<void> {
    const body = { decision_id: decisionId, ...call, state, result };
    await this.request("POST", `/v1/checks/${enc(decisionId)}/result`, body, timeoutMs);
  }

  async cancel(id: string, reason: string, timeoutMs: number): Promise<Approval> {
    return asApproval(await this.request("POST", `/v1/approvals/${enc(id)}/cancel`, { reason }, timeoutMs));
  }

  private async request(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const timeout = AbortSignal.timeout(Math.max(1, Math.floor(timeoutMs)));
    const combined = signal ? AbortSignal.any([timeout, signal]) : timeout;
    let response: Response;
    try {
      response = await fetch(this.url + path, {
        method,
        headers: {
          authorization: `Bearer ${this.apiKey}`,
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? null : JSON.stringify(body),
        signal: combined,
        redirect: "error",
      });
    } catch (err) {
      if (signal?.aborted) throw new GatewayError("aborted", "the tool call was cancelled");
      if (timeout.aborted) {
        throw new GatewayError("timeout", `no answer from the gateway within ${timeoutMs} ms`);
      }
      throw new GatewayError("unreachable", `cannot reach the gateway at ${this.url} (${describe(err)})`);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      if (signal?.aborted) throw new GatewayError("aborted", "the tool call was cancelled");
      throw new GatewayError("unreachable", `the gateway's answer was cut off (${describe(err)})`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const code = isObject(parsed) && typeof parsed.error === "string" ? parsed.error : undefined;
      const message = isObject(parsed) && typeof parsed.message === "string" ? parsed.message : undefined;
      throw new GatewayError(
        "http",
        `the gateway answered HTTP ${response.status}` + (message ? `: ${message}` : ""),
        response.status,
        code,
      );
    }
    if (parsed === undefined) {
      throw new GatewayError("malformed", `the gateway answered HTTP ${response.status} with a body that is not JSON`);
    }
    return parsed;
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    if (cause instanceof Error && "code" in cause) return String((cause as Error & { code: unknown }).code);
    if (cause instanceof Error) return cause.message;
    return err.message;
  }
  return String(err);
}
