/**
 * The part of OpenClaw's plugin API this plugin uses, copied field for field from OpenClaw's
 * own definitions so the plugin needs no runtime dependency on OpenClaw:
 *
 * - `PluginHookToolContext`, `PluginHookToolRequesterContext`, `PluginHookBeforeToolCallEvent`,
 *   `PluginHookAfterToolCallEvent`: openclaw/openclaw `src/plugins/hook-tool.types.ts`.
 * - `PluginHookBeforeToolCallResult` (with `requireApproval`) and `PluginApprovalResolution`:
 *   openclaw/openclaw `src/plugins` (the result type beside `PluginApprovalResolutions`), as
 *   documented in `docs/plugins/hooks/tool-policy.md`.
 * - `OpenClawPluginApi.on(hookName, handler, opts?: {priority, timeoutMs})`, `pluginConfig`,
 *   `logger`: openclaw/openclaw `src/plugins/plugin-api.types.ts`.
 * - A plugin entry is `{id, name, description, configSchema?, register(api)}`
 *   (`definePluginEntry` from `openclaw/plugin-sdk/plugin-entry` returns it unchanged).
 *
 * Fields we never read (trace, getSessionExtension, scope, conversation, ...) are left out.
 */

/** Host-derived identity for the message requester that initiated a tool call. */
export type PluginHookToolRequesterContext = {
  readonly channel?: string;
  readonly accountId?: string;
  readonly senderId?: string;
  readonly senderIsOwner?: boolean;
  readonly roleIds?: readonly string[];
};

export type PluginHookToolContext = {
  agentId?: string;
  sessionKey?: string;
  sessionId?: string;
  runId?: string;
  /** Aborts when the owning tool call is cancelled. Hook timeout expiry does not abort it. */
  abortSignal?: AbortSignal;
  toolName: string;
  toolCallId?: string;
  channelId?: string;
  requester?: PluginHookToolRequesterContext;
};

export type PluginHookBeforeToolCallEvent = {
  toolName: string;
  params: Record<string, unknown>;
  runId?: string;
  toolCallId?: string;
  derivedPaths?: readonly string[];
};

export type PluginHookAfterToolCallEvent = {
  toolName: string;
  params: Record<string, unknown>;
  runId?: string;
  toolCallId?: string;
  result?: unknown;
  error?: string;
  durationMs?: number;
};

export type PluginApprovalResolution = "allow-once" | "allow-always" | "deny" | "timeout" | "cancelled";

export type PluginHookBeforeToolCallResult = {
  params?: Record<string, unknown>;
  block?: boolean;
  blockReason?: string;
  requireApproval?: {
    title: string;
    description: string;
    severity?: "info" | "warning" | "critical";
    timeoutMs?: number;
    allowedDecisions?: Array<"allow-once" | "allow-always" | "deny">;
    pluginId?: string;
    onResolution?: (decision: PluginApprovalResolution) => Promise<void> | void;
  };
};

export type BeforeToolCallHandler = (
  event: PluginHookBeforeToolCallEvent,
  ctx: PluginHookToolContext,
) => Promise<PluginHookBeforeToolCallResult | void> | PluginHookBeforeToolCallResult | void;

export type AfterToolCallHandler = (
  event: PluginHookAfterToolCallEvent,
  ctx: PluginHookToolContext,
) => Promise<void> | void;

export type PluginHookHandlerMap = {
  before_tool_call: BeforeToolCallHandler;
  after_tool_call: AfterToolCallHandler;
};

export type PluginHookName = keyof PluginHookHandlerMap;

export type PluginLogger = {
  debug?: (message: string) => void;
  info: (message: string) => void;
  warn: (message: string) => void;
  error: (message: string) => void;
};

export type OpenClawPluginApi = {
  id: string;
  name: string;
  pluginConfig?: Record<string, unknown>;
  logger: PluginLogger;
  on: <K extends PluginHookName>(
    hookName: K,
    handler: PluginHookHandlerMap[K],
    opts?: { priority?: number; timeoutMs?: number },
  ) => void;
};

export type OpenClawPluginDefinition = {
  id: string;
  name: string;
  description: string;
  configSchema?: Record<string, unknown>;
  register: (api: OpenClawPluginApi) => void;
};
