/**
 * An HTTPS server whose certificate is reloaded when its files change, without dropping open
 * connections (`server.setSecureContext`), and which shuts down gracefully: it stops accepting,
 * lets in-flight requests finish, then closes what is left after a grace period.
 */
import { X509Certificate, createHash } from "node:crypto";
import { readFileSync, watch, type FSWatcher } from "node:fs";
import { createServer, type Server } from "node:https";
import type { RequestListener } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname } from "node:path";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import { ConfigError } from "./errors.js";
import type { Logger } from "./logger.js";

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/**
 * The notAfter of the first (leaf) certificate in a PEM bundle, in Unix seconds. NaN when the PEM
 * cannot be parsed.
 */
export function certificateNotAfterSeconds(pem: Buffer | string): number {
  try {
    return Date.parse(new X509Certificate(pem).validTo) / 1000;
  } catch {
    return Number.NaN;
  }
}

/** Reads and checks a certificate and key pair. Throws ConfigError naming the files. */
export function loadTls(files: TlsFiles): SecureContextOptions & { fingerprint: string; notAfter: number } {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = readFileSync(files.certFile);
    key = readFileSync(files.keyFile);
  } catch (e) {
    throw new ConfigError(`cannot read the TLS certificate or key: ${(e as Error).message}`, { cause: e });
  }
  try {
    // Throws when the files are not PEM or the key does not match the certificate.
    createSecureContext({ cert, key });
  } catch (e) {
    throw new ConfigError(
      `the TLS certificate ${files.certFile} and key ${files.keyFile} are not a valid matching pair: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const fingerprint = createHash("sha256").update(cert).update(key).digest("hex");
  return { cert, key, fingerprint, notAfter: certificateNotAfterSeconds(cert) };
}

export interface HttpsServerOptions {
  readonly handler: RequestListener;
  readonly tls: TlsFiles;
  readonly host: string;
  readonly port: number;
  readonly log: Logger;
  /** How often the files are re-read even without a change notification, in ms. Default 10 s. */
  readonly pollIntervalMs?: number;
  /** Keep-alive timeout for idle connections, in ms. Default 65 s. */
  readonly keepAliveTimeoutMs?: number;
  /**
   * Called with the served certificate's notAfter (Unix seconds) at start and after each reload
   * that installs a new certificate; feeds a certificate-expiry gauge.
   */
  readonly onCertificate?: (notAfterSeconds: number) => void;
}

export interface RunningHttpsServer {
  readonly server: Server;
  readonly port: number;
  /** Re-reads the files now; resolves to true when a new certificate was installed. */
  reload(): boolean;
  /** Number of successful reloads, for tests and metrics. */
  reloads(): number;
  /** notAfter of the certificate served now, in Unix seconds. */
  certificateNotAfter(): number;
  /** Stops accepting, waits for in-flight requests up to `graceMs`, then closes every connection. */
  close(graceMs?: number): Promise<void>;
}

export async function startHttpsServer(opts: HttpsServerOptions): Promise<RunningHttpsServer> {
  const log = opts.log;
  let current = loadTls(opts.tls);
  let reloadCount = 0;
  const server = createServer({ cert: current.cert, key: current.key, minVersion: "TLSv1.2" }, opts.handler);
  server.keepAliveTimeout = opts.keepAliveTimeoutMs ?? 65_000;
  opts.onCertificate?.(current.notAfter);

  const reload = (): boolean => {
    let next;
    try {
      next = loadTls(opts.tls);
    } catch (e) {
      // Mid-rotation the files can be briefly inconsistent; keep serving the old pair.
      log.warn(
        { err: (e as Error).message },
        "TLS files unreadable or inconsistent; keeping the current certificate",
      );
      return false;
    }
    if (next.fingerprint === current.fingerprint) return false;
    server.setSecureContext({ cert: next.cert, key: next.key, minVersion: "TLSv1.2" });
    current = next;
    reloadCount++;
    opts.onCertificate?.(current.notAfter);
    log.info({ certFile: opts.tls.certFile }, "TLS certificate reloaded");
    return true;
  };

  // Kubernetes updates Secret volumes by swapping a symlink in the directory, so watch the
  // directories, not the files; the poll covers file systems without change notification.
  const watchers: FSWatcher[] = [];
  let debounce: NodeJS.Timeout | undefined;
  for (const dir of new Set([dirname(opts.tls.certFile), dirname(opts.tls.keyFile)])) {
    try {
      const w = watch(dir, () => {
        clearTimeout(debounce);
        debounce = setTimeout(reload, 100);
      });
      w.on("error", () => undefined);
      watchers.push(w);
    } catch {
      log.warn({ dir }, "cannot watch the TLS directory; relying on polling");
    }
  }
  const poll = setInterval(reload, opts.pollIntervalMs ?? 10_000);
  poll.unref();

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  let closing: Promise<void> | undefined;
  const close = (graceMs = 10_000): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      clearInterval(poll);
      clearTimeout(debounce);
      for (const w of watchers) w.close();
      const sweep = setInterval(() => server.closeIdleConnections(), 50);
      const force = setTimeout(() => server.closeAllConnections(), graceMs);
      server.close(() => {
        clearInterval(sweep);
        clearTimeout(force);
        resolve();
      });
      server.closeIdleConnections();
    });
    return closing;
  };

  return {
    server,
    port,
    reload,
    reloads: () => reloadCount,
    certificateNotAfter: () => current.notAfter,
    close,
  };
}
