/**
 * Clearance for OpenClaw: every tool call asks a Clearance gateway before it runs.
 *
 * allow → the call runs; deny or block → `{block: true, blockReason}`; approve → the hook
 * waits for the people the policy names (within its budget), releases the approved call and
 * later reports its result. Anything unexpected — no gateway, a bad answer, a bad setting —
 * blocks the call.
 */

import { CONFIG_SCHEMA, parseSettings } from "./config.js";
import { ClearanceGate } from "./gate.js";
import type { OpenClawPluginApi, OpenClawPluginDefinition } from "./openclaw.js";

export { ClearanceClient, GatewayError } from "./client.js";
export { CONFIG_SCHEMA, parseSettings, SettingsError } from "./config.js";
export type { ClearanceSettings } from "./config.js";
export { ClearanceGate } from "./gate.js";
export type * from "./openclaw.js";

export const PLUGIN_ID = "clearance";

/** Register the hooks. A bad configuration blocks every tool call instead of none. */
export function register(api: OpenClawPluginApi): ClearanceGate | undefined {
  let gate: ClearanceGate;
  try {
    const settings = parseSettings(api.pluginConfig, process.env);
    gate = new ClearanceGate(settings, api.logger);
    api.on("before_tool_call", gate.beforeToolCall, {
      priority: settings.priority,
      timeoutMs: settings.hookTimeoutMs,
    });
    api.on("after_tool_call", gate.afterToolCall);
    api.logger.info(`clearance: tool calls are checked by ${settings.url}`);
    return gate;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    api.logger.error(`${why} — every tool call is blocked until this is fixed`);
    api.on(
      "before_tool_call",
      () => ({ block: true, blockReason: `Clearance is misconfigured (${why}); no tool may run.` }),
      { priority: 1_000_000 },
    );
    return undefined;
  }
}

const plugin: OpenClawPluginDefinition = {
  id: PLUGIN_ID,
  name: "Clearance",
  description: "Asks a Clearance approval gateway before every tool call (policy, approvals, audit).",
  configSchema: CONFIG_SCHEMA,
  register(api) {
    register(api);
  },
};

export default plugin;
