import { expect } from "chai";
import { defaultSocketPath, loadMounterConfig } from "../../../../agent/mounter/config.js";
import { DEFAULT_CLIENT_PATH, DEFAULT_PROGRAMS } from "../../../../agent/mount/mounters/programs.js";
import { ConfigError } from "../../../../shared/errors.js";

describe("loadMounterConfig", () => {
  const base = ["--root", "/var/lib/dv-test"];

  const failure = (argv: string[], env: NodeJS.ProcessEnv = {}): ConfigError => {
    try {
      loadMounterConfig([...base, ...argv], env);
    } catch (e) {
      expect(e).to.be.instanceOf(ConfigError);
      return e as ConfigError;
    }
    throw new Error("expected a ConfigError");
  };

  it("[ok] defaults: absolute paths where Debian and the image put them, a PATH of system directories", () => {
    const c = loadMounterConfig(base, { PATH: "/usr/local/sbin:/usr/local/bin:/usr/bin" });
    expect(c.programs).to.deep.equal({
      s3fs: "/usr/bin/s3fs",
      rclone: "/usr/bin/rclone",
      geesefs: "/usr/local/bin/geesefs",
      mount: "/usr/bin/mount",
      umount: "/usr/bin/umount",
      fusermount3: "/usr/bin/fusermount3",
    });
    expect(c.programs).to.deep.equal(DEFAULT_PROGRAMS);
    expect(c.clientPath).to.equal(DEFAULT_CLIENT_PATH);
    expect(Object.isFrozen(c.programs)).to.equal(true);
  });

  describe("CSI services", () => {
    it("[ok] off by default; the node id falls back to NODE_NAME, then the host name", () => {
      const c = loadMounterConfig(base, { NODE_NAME: "node-7" });
      expect(c.csiSocket).to.equal(undefined);
      expect(c.nodeId).to.equal("node-7");
      expect(loadMounterConfig(base, {}).nodeId).to.be.a("string").and.not.equal("");
    });

    it("[ok] --csi-socket and --node-id, or DV_CSI_SOCKET and DV_NODE_ID (before NODE_NAME)", () => {
      const sock = "/var/lib/kubelet/plugins/csi.dynamic-volumes.io/csi.sock";
      expect(loadMounterConfig([...base, "--csi-socket", sock, "--node-id", "n1"], {})).to.include({
        csiSocket: sock,
        nodeId: "n1",
      });
      expect(loadMounterConfig(base, { DV_CSI_SOCKET: sock, DV_NODE_ID: "n2", NODE_NAME: "n3" })).to.include({
        csiSocket: sock,
        nodeId: "n2",
      });
    });

    it("[error] a relative socket path, a node id that is not a name", () => {
      expect(failure(["--csi-socket", "csi.sock"]).message).to.match(/--csi-socket \(env DV_CSI_SOCKET\)/);
      expect(failure(["--node-id", "a b"]).message).to.match(/--node-id \(env DV_NODE_ID\)/);
    });
  });

  it("[ok] each program from its flag or its DV_ variable, the flag first", () => {
    const c = loadMounterConfig(
      [...base, "--s3fs-program", "/opt/s3fs/bin/s3fs", "--client-path", "/usr/bin:/bin"],
      {
        DV_S3FS_PROGRAM: "/ignored/s3fs",
        DV_RCLONE_PROGRAM: "/opt/rclone",
        DV_GEESEFS_PROGRAM: "/opt/geesefs",
        DV_MOUNT_PROGRAM: "/sbin/mount",
        DV_UMOUNT_PROGRAM: "/sbin/umount",
        DV_FUSERMOUNT3_PROGRAM: "/opt/fuse/fusermount3",
      },
    );
    expect(c.programs).to.deep.equal({
      s3fs: "/opt/s3fs/bin/s3fs",
      rclone: "/opt/rclone",
      geesefs: "/opt/geesefs",
      mount: "/sbin/mount",
      umount: "/sbin/umount",
      fusermount3: "/opt/fuse/fusermount3",
    });
    expect(c.clientPath).to.equal("/usr/bin:/bin");
  });

  const relative: Array<[string, string, string]> = [
    ["s3fs-program", "DV_S3FS_PROGRAM", "s3fs"],
    ["rclone-program", "DV_RCLONE_PROGRAM", "./rclone"],
    ["geesefs-program", "DV_GEESEFS_PROGRAM", "bin/geesefs"],
    ["mount-program", "DV_MOUNT_PROGRAM", "mount"],
    ["umount-program", "DV_UMOUNT_PROGRAM", "umount"],
    ["fusermount3-program", "DV_FUSERMOUNT3_PROGRAM", "fusermount3"],
  ];
  for (const [flag, env, value] of relative) {
    it(`[error] a relative ${flag} fails at start-up, naming the flag and ${env}`, () => {
      const e = failure([], { [env]: value });
      expect(e.message).to.include(`--${flag} (env ${env})`);
      expect(e.message).to.include("must be an absolute path");
    });
  }

  it("[error] a client PATH with a relative or empty entry fails, naming DV_CLIENT_PATH", () => {
    for (const value of ["/usr/bin:bin", "/usr/bin::/bin", ".:/usr/bin", "/usr/../tmp"]) {
      const e = failure(["--client-path", value]);
      expect(e.message).to.include("--client-path (env DV_CLIENT_PATH)");
      expect(e.message).to.include("absolute directories only");
    }
  });

  it("[ok] the socket defaults to <root>/run/mounter.sock, the agent's ids to 65532, --check off", () => {
    const c = loadMounterConfig(base, {});
    expect(c.socketPath).to.equal("/var/lib/dv-test/run/mounter.sock");
    expect(defaultSocketPath("/")).to.equal("/run/mounter.sock");
    expect([c.agentUid, c.agentGid, c.check]).to.deep.equal([65532, 65532, false]);
  });

  it("[ok] --check is a switch; ids and socket from flags or DV_ variables", () => {
    const c = loadMounterConfig([...base, "--check", "--agent-uid", "1000"], {
      DV_AGENT_GID: "0",
      DV_SOCKET: "/run/dv/m.sock",
    });
    expect([c.check, c.agentUid, c.agentGid, c.socketPath]).to.deep.equal([true, 1000, 0, "/run/dv/m.sock"]);
  });

  it("[error] a non-numeric agent id or a relative socket fails, naming the flag", () => {
    expect(failure(["--agent-uid", "nobody"]).message).to.include("--agent-uid (env DV_AGENT_UID)");
    expect(failure(["--agent-gid=-1"]).message).to.include("--agent-gid (env DV_AGENT_GID)");
    expect(failure(["--socket", "run/m.sock"]).message).to.include("--socket (env DV_SOCKET)");
  });
});
