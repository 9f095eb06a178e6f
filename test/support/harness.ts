/**
 * The end-to-end harness for tests: runtime code lives in scripts/lib (the local demo uses it too).
 * Needs root, /dev/fuse, runc, busybox-static and the FUSE clients; see test/e2e/harness.test.ts.
 */
export * from "../../scripts/lib/namespaces.js";
export * from "../../scripts/lib/runc.js";
export * from "../../scripts/lib/s3-server.js";
export * from "../../scripts/lib/workdir.js";
