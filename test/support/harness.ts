/**
 * The end-to-end harness for tests: runtime code lives in scripts/lib (the local demo uses it too).
 * Needs root, /dev/fuse, runc, busybox-static and the FUSE clients; see test/e2e/harness.test.ts.
 * CSI mode: `LocalNode.start({volumeMode: "csi"})` publishes pods through the kubelet stand-in.
 */
export * from "../../scripts/lib/kubelet.js";
export * from "../../scripts/lib/namespaces.js";
export * from "../../scripts/lib/runc.js";
export * from "../../scripts/lib/s3-server.js";
export * from "../../scripts/lib/workdir.js";

/** Agent flags for tests that wait on it: the given client by default, resyncs and retries within seconds. */
export function fastAgentArgs(mounter: string): string[] {
  return ["--default-mounter", mounter, "--resync-seconds", "1", "--backoff-max-seconds", "2"];
}

/**
 * Agent flags for its console in local mode: port 0 (the agent logs the port it got), the given
 * serving certificate and token file.
 */
export function localConsoleArgs(pki: { certFile: string; keyFile: string }, tokenFile: string): string[] {
  return [
    "--listen",
    "127.0.0.1:0",
    "--tls-cert-file",
    pki.certFile,
    "--tls-key-file",
    pki.keyFile,
    "--token-auth-file",
    tokenFile,
  ];
}
