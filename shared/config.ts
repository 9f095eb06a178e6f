/**
 * Reading a program's configuration once at start-up: every option is a `--flag` with an environment
 * variable of the same meaning; the flag wins. A bad value fails with a message that names both.
 */
import type { KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ConfigError } from "./errors.js";
import { signingKeyFromText, signingKeyObject } from "./signing.js";

export interface OptionSpec {
  /** Flag name without dashes, e.g. `tls-cert-file`. */
  readonly flag: string;
  /** Environment variable, e.g. `DV_TLS_CERT_FILE`. */
  readonly env: string;
  readonly description: string;
  readonly default?: string;
  /** Boolean switch (`--flag`, env `true`/`false`). */
  readonly boolean?: boolean;
}

export type RawOptions = Record<string, string | undefined>;

/** An option whose environment variable is the conventional {@link envName} of its flag. */
export function option(flag: string, description: string, def?: string): OptionSpec {
  return { flag, env: envName(flag), description, ...(def !== undefined ? { default: def } : {}) };
}

/** The `--log-level` option every program has. */
export const LOG_LEVEL_OPTION = option(
  "log-level",
  "pino log level: fatal, error, warn, info, debug, trace, silent",
  "info",
);

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export function parseLogLevel(spec: OptionSpec, value: string): string {
  if (!LOG_LEVELS.has(value))
    throw new ConfigError(
      `--${spec.flag} (env ${spec.env}): "${value}" is not one of ${[...LOG_LEVELS].join(", ")}`,
    );
  return value;
}

/** The conventional environment variable for a flag: `DV_` + upper snake case. */
export function envName(flag: string): string {
  return `DV_${flag.toUpperCase().replace(/-/g, "_")}`;
}

/** Parses argv and env against the specs. Returns one string (or undefined) per flag. */
export function readOptions(
  specs: readonly OptionSpec[],
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): RawOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        specs.map((s) => [s.flag, { type: s.boolean ? ("boolean" as const) : ("string" as const) }]),
      ),
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new ConfigError(
      `${(e as Error).message}. Known flags: ${specs.map((s) => `--${s.flag}`).join(", ")}`,
      {
        cause: e,
      },
    );
  }
  const out: RawOptions = {};
  for (const s of specs) {
    const v = parsed.values[s.flag];
    if (v !== undefined) out[s.flag] = String(v);
    else if (env[s.env] !== undefined && env[s.env] !== "") out[s.flag] = env[s.env];
    else out[s.flag] = s.default;
  }
  return out;
}

function where(spec: OptionSpec): string {
  return `--${spec.flag} (env ${spec.env})`;
}

export function requireOption(spec: OptionSpec, raw: RawOptions): string {
  const v = raw[spec.flag];
  if (v === undefined || v === "") throw new ConfigError(`${where(spec)} is required: ${spec.description}`);
  return v;
}

/** `HOST:PORT` with a numeric port 0-65535; IPv6 hosts in brackets. */
export function parseListen(spec: OptionSpec, value: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]*):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new ConfigError(`${where(spec)}: "${value}" is not HOST:PORT (for example 0.0.0.0:8443)`);
  const host = m[1]!.replace(/^\[|\]$/g, "");
  return { host: host === "" ? "0.0.0.0" : host, port };
}

export function parseAbsolutePath(spec: OptionSpec, value: string): string {
  if (!value.startsWith("/") || value.split("/").includes(".."))
    throw new ConfigError(`${where(spec)}: "${value}" must be an absolute path without ".."`);
  return value.length > 1 ? value.replace(/\/+$/, "") : value;
}

export function parseBoolean(spec: OptionSpec, value: string | undefined): boolean {
  if (value === undefined || value === "" || value === "false" || value === "0") return false;
  if (value === "true" || value === "1") return true;
  throw new ConfigError(`${where(spec)}: "${value}" must be true or false`);
}

export function parsePositiveInt(spec: OptionSpec, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n <= 0)
    throw new ConfigError(`${where(spec)}: "${value}" must be a positive whole number`);
  return n;
}

/** Reads a file that must exist and be readable, naming the option when it is not. */
export function readOptionFile(spec: OptionSpec, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(
      `${where(spec)}: cannot read "${path}": ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      {
        cause: e,
      },
    );
  }
}

/**
 * Reads the id-signing key (docs/design.md "Local mode"): trimmed, UTF-8, at least 16 bytes. Returns it
 * as a secret KeyObject, made once here for every signature and verification that follows.
 */
export function readSigningKey(spec: OptionSpec, path: string): KeyObject {
  const key = signingKeyFromText(readOptionFile(spec, path));
  if (key.length < 16)
    throw new ConfigError(
      `${where(spec)}: the signing key in "${path}" is ${key.length} bytes; use at least 16 random bytes (for example: head -c 32 /dev/urandom | base64)`,
    );
  return signingKeyObject(key);
}

/** Usage text for `--help`. */
export function usage(program: string, specs: readonly OptionSpec[]): string {
  const lines = specs.map(
    (s) =>
      `  --${s.flag}${s.boolean ? "" : " VALUE"}\n      ${s.description}` +
      ` [env ${s.env}${s.default !== undefined ? `, default ${s.default}` : ""}]`,
  );
  return `Usage: ${program} [flags]\n\n${lines.join("\n")}\n`;
}
