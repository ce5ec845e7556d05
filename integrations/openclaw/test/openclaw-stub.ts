/**
 * A stand-in for OpenClaw's plugin host, just large enough to drive this plugin the way
 * OpenClaw does. It follows OpenClaw's documented contract (docs/plugins/hooks/reference.md,
 * docs/plugins/hooks/tool-policy.md; types in src/plugins/hook-tool.types.ts and
 * src/plugins/plugin-api.types.ts of openclaw/openclaw):
 *
 * - `api.on(name, handler, {priority, timeoutMs})`; handlers run in descending priority,
 *   registration order breaking ties.
 * - `before_tool_call` is a gate: sequential; `block: true` is terminal; a thrown handler or
 *   one that outlives its budget (default 15 s) fails closed — the call is blocked.
 * - `after_tool_call` observes: handlers run concurrently, return values are ignored, errors
 *   are logged. (We await them, which the docs allow: "the emitter may await completion".)
 */

import type {
  OpenClawPluginApi,
  OpenClawPluginDefinition,
  PluginHookAfterToolCallEvent,
  PluginHookBeforeToolCallEvent,
  PluginHookBeforeToolCallResult,
  PluginHookHandlerMap,
  PluginHookName,
  PluginHookToolContext,
} from "../src/openclaw.js";

export const DEFAULT_GATE_TIMEOUT_MS = 15_000;

type Registration = {
  hookName: PluginHookName;
  handler: PluginHookHandlerMap[PluginHookName];
  priority: number;
  timeoutMs: number | undefined;
  order: number;
};

export type ToolOutcome =
  | { ran: false; blockReason: string }
  | { ran: true; result?: unknown; error?: string };

export class StubHost {
  readonly logs: Array<{ level: string; message: string }> = [];
  private readonly registrations: Registration[] = [];

  constructor(
    private readonly pluginId: string,
    private readonly pluginConfig: Record<string, unknown> | undefined,
  ) {}

  /** Load a plugin entry the way OpenClaw does: call its `register(api)` once. */
  load(plugin: OpenClawPluginDefinition): void {
    plugin.register(this.api());
  }

  api(): OpenClawPluginApi {
    const log = (level: string) => (message: string) => {
      this.logs.push({ level, message });
    };
    return {
      id: this.pluginId,
      name: this.pluginId,
      pluginConfig: this.pluginConfig,
      logger: { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") },
      on: (hookName, handler, opts) => {
        this.registrations.push({
          hookName,
          handler: handler as PluginHookHandlerMap[PluginHookName],
          priority: opts?.priority ?? 0,
          timeoutMs: opts?.timeoutMs,
          order: this.registrations.length,
        });
      },
    };
  }

  registered(hookName: PluginHookName): Registration[] {
    return this.registrations
      .filter((r) => r.hookName === hookName)
      .sort((a, b) => b.priority - a.priority || a.order - b.order);
  }

  async runBeforeToolCall(
    event: PluginHookBeforeToolCallEvent,
    ctx: PluginHookToolContext,
  ): Promise<PluginHookBeforeToolCallResult> {
    let merged: PluginHookBeforeToolCallResult = {};
    for (const reg of this.registered("before_tool_call")) {
      const handler = reg.handler as PluginHookHandlerMap["before_tool_call"];
      const budget = reg.timeoutMs ?? DEFAULT_GATE_TIMEOUT_MS;
      let result: PluginHookBeforeToolCallResult | void;
      try {
        result = await withTimeout(Promise.resolve(handler({ ...event, params: { ...event.params } }, ctx)), budget);
      } catch (err) {
        const why = err instanceof TimeoutError ? `timed out after ${budget} ms` : String(err);
        return { block: true, blockReason: `hook before_tool_call failed (${why}); blocked` };
      }
      if (!result) continue;
      if (result.block === true) return { ...merged, block: true, blockReason: result.blockReason };
      if (result.requireApproval && !merged.requireApproval) merged = { ...merged, requireApproval: result.requireApproval };
      if (result.params && !merged.requireApproval) merged = { ...merged, params: result.params };
    }
    return merged;
  }

  async runAfterToolCall(event: PluginHookAfterToolCallEvent, ctx: PluginHookToolContext): Promise<void> {
    await Promise.all(
      this.registered("after_tool_call").map(async (reg) => {
        try {
          await (reg.handler as PluginHookHandlerMap["after_tool_call"])(event, ctx);
        } catch (err) {
          this.logs.push({ level: "error", message: `after_tool_call handler threw: ${String(err)}` });
        }
      }),
    );
  }

  /** What OpenClaw does around one tool call: gate, execute, observe. */
  async callTool(
    event: PluginHookBeforeToolCallEvent,
    ctx: PluginHookToolContext,
    execute: (params: Record<string, unknown>) => Promise<unknown>,
  ): Promise<ToolOutcome> {
    const decision = await this.runBeforeToolCall(event, ctx);
    if (decision.block) return { ran: false, blockReason: decision.blockReason ?? "blocked" };
    if (decision.requireApproval) return { ran: false, blockReason: "stub host: plugin approvals are not offered" };
    const params = decision.params ?? event.params;
    const started = Date.now();
    let outcome: ToolOutcome;
    let after: PluginHookAfterToolCallEvent;
    try {
      const result = await execute(params);
      outcome = { ran: true, result };
      after = { ...event, params, result, durationMs: Date.now() - started };
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      outcome = { ran: true, error };
      after = { ...event, params, error, durationMs: Date.now() - started };
    }
    await this.runAfterToolCall(after, ctx);
    return outcome;
  }
}

class TimeoutError extends Error {}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError()), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
