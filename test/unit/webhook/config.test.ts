import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../../../shared/errors.js";
import { loadWebhookConfig, type WebhookConfig } from "../../../webhook/config.js";

describe("loadWebhookConfig --volume-mode", () => {
  let dir: string;
  let keyFile: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "dv-webhook-config-"));
    keyFile = join(dir, "key");
    writeFileSync(keyFile, "config-test-signing-key-0123456789\n", { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const tls = ["--tls-cert-file", "/tls/tls.crt", "--tls-key-file", "/tls/tls.key"];
  const load = (argv: string[], env: NodeJS.ProcessEnv = {}): WebhookConfig =>
    loadWebhookConfig([...tls, ...argv], env);

  const ok: Array<[string, () => [string[], NodeJS.ProcessEnv], "hostPath" | "csi", boolean]> = [
    ["[ok] hostPath by default, with the key", () => [["--signing-key-file", keyFile], {}], "hostPath", true],
    ["[ok] --volume-mode csi without a key", () => [["--volume-mode", "csi"], {}], "csi", false],
    [
      "[ok] --volume-mode=csi with a key, which it keeps",
      () => [[`--volume-mode=csi`, `--signing-key-file=${keyFile}`], {}],
      "csi",
      true,
    ],
    ["[ok] DV_VOLUME_MODE=csi", () => [[], { DV_VOLUME_MODE: "csi" }], "csi", false],
    [
      "[ok] the flag wins over the environment",
      () => [["--volume-mode", "hostPath"], { DV_VOLUME_MODE: "csi", DV_SIGNING_KEY_FILE: keyFile }],
      "hostPath",
      true,
    ],
  ];
  for (const [label, make, mode, hasKey] of ok)
    it(label, () => {
      const [argv, env] = make();
      const config = load(argv, env);
      expect(config.volumeMode).to.equal(mode);
      expect(config.signingKey !== undefined, "signing key loaded").to.equal(hasKey);
      expect(Object.isFrozen(config)).to.equal(true);
    });

  const errors: Array<[string, () => [string[], NodeJS.ProcessEnv], RegExp]> = [
    [
      "[error] an unknown mode, named with its flag and variable",
      () => [["--volume-mode", "nfs", "--signing-key-file", keyFile], {}],
      /^--volume-mode \(env DV_VOLUME_MODE\): "nfs" is not one of hostPath, csi$/,
    ],
    [
      "[error] a mode spelt in another case",
      () => [["--signing-key-file", keyFile], { DV_VOLUME_MODE: "CSI" }],
      /--volume-mode \(env DV_VOLUME_MODE\): "CSI" is not one of hostPath, csi/,
    ],
    [
      "[error] hostPath mode without a key",
      () => [[], {}],
      /--signing-key-file \(env DV_SIGNING_KEY_FILE\) is required: .*required in hostPath mode/,
    ],
    [
      "[error] csi mode with a key file that does not exist: a given file is read",
      () => [["--volume-mode", "csi", "--signing-key-file", join(dir, "missing")], {}],
      /--signing-key-file \(env DV_SIGNING_KEY_FILE\): cannot read/,
    ],
  ];
  for (const [label, make, message] of errors)
    it(label, () => {
      const [argv, env] = make();
      let error: unknown;
      try {
        load(argv, env);
      } catch (e) {
        error = e;
      }
      expect(error).to.be.instanceOf(ConfigError);
      expect((error as Error).message).to.match(message);
    });
});
