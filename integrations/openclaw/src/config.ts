/**
 * The plugin's settings (`plugins.entries.clearance.config` in OpenClaw's configuration),
 * validated once at registration: a bad setting stops the plugin from loading instead of
 * letting tool calls through unchecked.
 */

export type ClearanceSettings = {
  /** The gateway, e.g. `http://127.0.0.1:8750`. */
  url: string;
  /** An agent API key (`clearance keys create --agent NAME`). */
  apiKey: string;
  /** Prefixed to a tool name to make the Clearance action (`openclaw.` + `exec`). */
  actionPrefix: string;
  /** Tool name → action, for tools a policy already knows by another name. */
  actions: Record<string, string>;
  /** `channel:senderId` → Clearance person id: who asked, as the directory knows them. */
  users: Record<string, string>;
  /** Block a call whose requester is not in `users` (the policy never sees an unknown user). */
  requireKnownUser: boolean;
  /** The `before_tool_call` budget this plugin registers with OpenClaw, in ms. */
  hookTimeoutMs: number;
  /** The most one plain request (check, release, result) may take, in ms. */
  requestTimeoutMs: number;
  /** Data-sensitivity labels sent with every check. */
  labels: string[];
  /** The hook's priority (higher runs first); a gate should run before rewriting hooks. */
  priority: number;
};

export class SettingsError extends Error {
  override name = "SettingsError";
}

const KNOWN = new Set([
  "url",
  "apiKey",
  "actionPrefix",
  "actions",
  "users",
  "requireKnownUser",
  "hookTimeoutMs",
  "requestTimeoutMs",
  "labels",
  "priority",
]);

/** OpenClaw accepts hook budgets up to 600000 ms (docs/plugins/hooks/reference.md). */
export const MAX_HOOK_TIMEOUT_MS = 600_000;

function stringMap(name: string, value: unknown): Record<string, string> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SettingsError(`clearance: setting '${name}' must be an object of strings`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string" || v === "") {
      throw new SettingsError(`clearance: setting '${name}.${k}' must be a non-empty string`);
    }
    out[k] = v;
  }
  return out;
}

function integer(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new SettingsError(`clearance: setting '${name}' must be an integer from ${min} to ${max}`);
  }
  return value;
}

/** Read and check the settings; `env` supplies `CLEARANCE_URL` / `CLEARANCE_API_KEY`. */
export function parseSettings(
  raw: Record<string, unknown> | undefined,
  env: Record<string, string | undefined> = {},
): ClearanceSettings {
  const given = raw ?? {};
  for (const key of Object.keys(given)) {
    if (!KNOWN.has(key)) {
      throw new SettingsError(
        `clearance: unknown setting '${key}' (known: ${[...KNOWN].sort().join(", ")})`,
      );
    }
  }
  const url = given.url ?? env.CLEARANCE_URL;
  if (typeof url !== "string" || !/^https?:\/\/[^/]+/.test(url)) {
    throw new SettingsError(
      "clearance: setting 'url' is required (the gateway's http(s) URL, or env CLEARANCE_URL)",
    );
  }
  const apiKey = given.apiKey ?? env.CLEARANCE_API_KEY;
  if (typeof apiKey !== "string" || apiKey.trim() === "") {
    throw new SettingsError(
      "clearance: setting 'apiKey' is required (an agent key from `clearance keys create " +
        "--agent NAME`, or env CLEARANCE_API_KEY)",
    );
  }
  const prefix = given.actionPrefix ?? "openclaw.";
  if (typeof prefix !== "string") {
    throw new SettingsError("clearance: setting 'actionPrefix' must be a string");
  }
  const requireKnownUser = given.requireKnownUser ?? false;
  if (typeof requireKnownUser !== "boolean") {
    throw new SettingsError("clearance: setting 'requireKnownUser' must be true or false");
  }
  const labels = given.labels ?? [];
  if (!Array.isArray(labels) || !labels.every((l) => typeof l === "string")) {
    throw new SettingsError("clearance: setting 'labels' must be a list of strings");
  }
  const hookTimeoutMs = integer("hookTimeoutMs", given.hookTimeoutMs, 120_000, 1_000, MAX_HOOK_TIMEOUT_MS);
  const requestTimeoutMs = integer("requestTimeoutMs", given.requestTimeoutMs, 5_000, 100, 60_000);
  if (hookTimeoutMs < 2 * requestTimeoutMs + 500) {
    throw new SettingsError(
      "clearance: 'hookTimeoutMs' must leave room for a check and a release: at least " +
        `2 × requestTimeoutMs + 500 (= ${2 * requestTimeoutMs + 500})`,
    );
  }
  return {
    url: url.replace(/\/+$/, ""),
    apiKey: apiKey.trim(),
    actionPrefix: prefix,
    actions: stringMap("actions", given.actions),
    users: stringMap("users", given.users),
    requireKnownUser,
    hookTimeoutMs,
    requestTimeoutMs,
    labels: labels as string[],
    priority: integer("priority", given.priority, 100, -1_000_000, 1_000_000),
  };
}

/** The JSON schema OpenClaw shows and checks (`configSchema` in openclaw.plugin.json). */
export const CONFIG_SCHEMA: Record<string, unknown> = {
  type: "object",
  additionalProperties: false,
  properties: {
    url: { type: "string", description: "The Clearance gateway URL" },
    apiKey: { type: "string", description: "An agent API key (clearance keys create --agent)" },
    actionPrefix: { type: "string", default: "openclaw." },
    actions: { type: "object", additionalProperties: { type: "string" } },
    users: { type: "object", additionalProperties: { type: "string" } },
    requireKnownUser: { type: "boolean", default: false },
    hookTimeoutMs: { type: "integer", minimum: 1000, maximum: MAX_HOOK_TIMEOUT_MS, default: 120000 },
    requestTimeoutMs: { type: "integer", minimum: 100, maximum: 60000, default: 5000 },
    labels: { type: "array", items: { type: "string" } },
    priority: { type: "integer", default: 100 },
  },
};
