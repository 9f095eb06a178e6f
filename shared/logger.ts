/**
 * Logger factory. pino with the object first (`log.info({pod, name}, "mounted")`), one child per
 * component, and credentials removed by `redact` wherever they might appear in a logged object.
 */
import { pino, type Logger, type DestinationStream } from "pino";

export type { Logger } from "pino";

/** Paths that must never reach a log line. */
export const REDACT_PATHS = [
  "token",
  "*.token",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "req.headers.authorization",
  "secretAccessKey",
  "*.secretAccessKey",
  "accessKeyID",
  "*.accessKeyID",
  "credentials",
  "*.credentials",
  "env",
  "*.env",
  "data",
  "*.data",
  "stringData",
  "*.stringData",
  "key",
  "*.key",
  "signingKey",
  "*.signingKey",
];

export interface LoggerOptions {
  level?: string;
  name: string;
}

export function createLogger(opts: LoggerOptions, destination?: DestinationStream): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level ?? "info",
      redact: { paths: REDACT_PATHS, censor: "[REDACTED]" },
      base: { name: opts.name },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
