import { expect } from "chai";
import {
  buildMount,
  DEFAULT_CLIENT_PATH,
  DEFAULT_PROGRAMS,
  MOUNTER_BUILDERS,
  mounterName,
  scrubSecrets,
  secretsOf,
  withoutTimestamps,
  type MountCommand,
  type MountRequest,
} from "../../../../agent/mount/mounters/index.js";
import { AppError } from "../../../../shared/errors.js";
import { MOUNTERS, type MounterName } from "../../../../shared/names.js";

const SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const KEY_ID = "AKIAIOSFODNN7EXAMPLE";
const STATE = "/var/lib/dynamic-volumes/agent/mounts/0123456789abcdef0123456789abcdef/data";
const MP = "/var/lib/dynamic-volumes/pods/0123456789abcdef0123456789abcdef/data";

function request(over: Partial<MountRequest> = {}): MountRequest {
  return {
    bucket: "datasets",
    prefix: "",
    readOnly: false,
    mountPoint: MP,
    endpoint: "https://s3.example.com",
    region: "eu-west-1",
    credentials: { accessKeyID: KEY_ID, secretAccessKey: SECRET },
    options: {},
    stateDir: STATE,
    ...over,
  };
}

const BASE_ENV = {
  // The agent's own PATH, with a directory someone could write to first: never handed on.
  PATH: "/usr/local/sbin:/usr/bin:/bin",
  AWS_CA_BUNDLE: "/etc/ssl/certs/ca-certificates.crt",
  AWS_ACCESS_KEY_ID: "agent-own-key",
  AWS_PROFILE: "agent",
  RCLONE_CONFIG_OTHER_TYPE: "s3",
  AWSSECRETACCESSKEY: "agent-own-secret",
  KUBERNETES_SERVICE_HOST: "10.0.0.1",
};

function expectInvalid(fn: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, "expected an AppError").to.be.instanceOf(AppError);
  expect((caught as AppError).code).to.equal("InvalidArgument");
  expect((caught as AppError).message).to.match(pattern);
}

describe("mounters", () => {
  describe("buildMount s3fs", () => {
    const rows: Array<[string, Partial<MountRequest>, string[]]> = [
      [
        "whole bucket, read-write",
        {},
        [
          "-f",
          "-o",
          `url=https://s3.example.com,use_path_request_style,endpoint=eu-west-1,passwd_file=${STATE}/passwd-s3fs,logfile=${STATE}/s3fs.log,allow_other,umask=0022`,
          "datasets",
          MP,
        ],
      ],
      [
        "prefix, read-only, uid/gid, default region",
        { prefix: "train/2024", readOnly: true, uid: 1000, gid: 2000, region: "" },
        [
          "-f",
          "-o",
          `url=https://s3.example.com,use_path_request_style,endpoint=us-east-1,passwd_file=${STATE}/passwd-s3fs,logfile=${STATE}/s3fs.log,allow_other,umask=0022,uid=1000,gid=2000,ro`,
          "datasets:/train/2024",
          MP,
        ],
      ],
      [
        "user options override the defaults and come sorted",
        { uid: 1000, options: { umask: "0077", uid: "3000", parallel_count: "8", enable_noobj_cache: true } },
        [
          "-f",
          "-o",
          `url=https://s3.example.com,use_path_request_style,endpoint=eu-west-1,passwd_file=${STATE}/passwd-s3fs,logfile=${STATE}/s3fs.log,allow_other,enable_noobj_cache,parallel_count=8,uid=3000,umask=0077`,
          "datasets",
          MP,
        ],
      ],
    ];
    for (const [what, over, argv] of rows) {
      it(`[ok] ${what}`, () => {
        const cmd = buildMount("s3fs", request(over));
        expect(cmd.command).to.equal("/usr/bin/s3fs");
        expect(cmd.argv).to.deep.equal(argv);
        expect(cmd.daemonizes).to.equal(false);
        expect(cmd.logFile).to.equal(`${STATE}/s3fs.log`);
      });
    }

    it("[ok] puts the keys in a 0600 passwd file in the state directory", () => {
      const cmd = buildMount("s3fs", request());
      expect(cmd.files).to.deep.equal([
        { path: `${STATE}/passwd-s3fs`, content: `${KEY_ID}:${SECRET}\n`, mode: 0o600 },
      ]);
      expect(Object.values(cmd.env).join("\n")).to.not.include(SECRET);
    });

    it("[error] credentials containing ':'", () => {
      let caught: unknown;
      try {
        buildMount("s3fs", request({ credentials: { accessKeyID: KEY_ID, secretAccessKey: "a:b" } }));
      } catch (e) {
        caught = e;
      }
      expect((caught as AppError).code).to.equal("InvalidArgument");
      expect((caught as AppError).message).to.match(/':'.*rclone or geesefs/);
      expect((caught as AppError).message).to.not.include("a:b");
    });
  });

  describe("buildMount rclone", () => {
    const rows: Array<[string, Partial<MountRequest>, string[]]> = [
      [
        "whole bucket, read-write",
        {},
        [
          "--config",
          "/dev/null",
          "mount",
          "dv:datasets",
          MP,
          "--allow-other",
          "--vfs-cache-mode",
          "writes",
          "--vfs-write-back",
          "0s",
          "--cache-dir",
          `${STATE}/cache`,
        ],
      ],
      [
        "prefix, read-only, uid/gid",
        { prefix: "train/2024", readOnly: true, uid: 1000, gid: 2000 },
        [
          "--config",
          "/dev/null",
          "mount",
          "dv:datasets/train/2024",
          MP,
          "--allow-other",
          "--vfs-cache-mode",
          "writes",
          "--vfs-write-back",
          "0s",
          "--cache-dir",
          `${STATE}/cache`,
          "--read-only",
          "--uid",
          "1000",
          "--gid",
          "2000",
        ],
      ],
      [
        "user flags, the cache mode overridden",
        { options: { "vfs-cache-mode": "full", "dir-cache-time": "1h30m", "buffer-size": "16M" } },
        [
          "--config",
          "/dev/null",
          "mount",
          "dv:datasets",
          MP,
          "--allow-other",
          "--vfs-write-back",
          "0s",
          "--cache-dir",
          `${STATE}/cache`,
          "--buffer-size",
          "16M",
          "--dir-cache-time",
          "1h30m",
          "--vfs-cache-mode",
          "full",
        ],
      ],
    ];
    for (const [what, over, argv] of rows) {
      it(`[ok] ${what}`, () => {
        const cmd = buildMount("rclone", request(over));
        expect(cmd.command).to.equal("/usr/bin/rclone");
        expect(cmd.argv).to.deep.equal(argv);
        expect(cmd.cacheDir).to.equal(`${STATE}/cache`);
        expect(cmd.files).to.deep.equal([]);
      });
    }

    it("[ok] configures the remote through env only, without AWS_CA_BUNDLE or inherited credentials", () => {
      const cmd = buildMount("rclone", request(), { baseEnv: BASE_ENV });
      expect(cmd.env).to.deep.equal({
        PATH: DEFAULT_CLIENT_PATH,
        KUBERNETES_SERVICE_HOST: "10.0.0.1",
        RCLONE_CONFIG_DV_TYPE: "s3",
        RCLONE_CONFIG_DV_PROVIDER: "Other",
        RCLONE_CONFIG_DV_ENV_AUTH: "false",
        RCLONE_CONFIG_DV_ENDPOINT: "https://s3.example.com",
        RCLONE_CONFIG_DV_REGION: "eu-west-1",
        RCLONE_CONFIG_DV_FORCE_PATH_STYLE: "true",
        RCLONE_CONFIG_DV_ACCESS_KEY_ID: KEY_ID,
        RCLONE_CONFIG_DV_SECRET_ACCESS_KEY: SECRET,
      });
    });
  });

  describe("buildMount geesefs", () => {
    const rows: Array<[string, Partial<MountRequest>, string[]]> = [
      [
        "whole bucket, read-write",
        {},
        [
          "-f",
          "--endpoint",
          "https://s3.example.com",
          "--region",
          "eu-west-1",
          "-o",
          "allow_other",
          "datasets",
          MP,
        ],
      ],
      [
        "prefix, read-only, uid/gid",
        { prefix: "train/2024", readOnly: true, uid: 1000, gid: 2000 },
        [
          "-f",
          "--endpoint",
          "https://s3.example.com",
          "--region",
          "eu-west-1",
          "-o",
          "allow_other",
          "-o",
          "ro",
          "--uid",
          "1000",
          "--gid",
          "2000",
          "datasets:train/2024",
          MP,
        ],
      ],
      [
        "user flags, octal modes get their leading zero",
        { options: { "file-mode": "644", "dir-mode": "0755", cheap: true, "stat-cache-ttl": "30s" } },
        [
          "-f",
          "--endpoint",
          "https://s3.example.com",
          "--region",
          "eu-west-1",
          "-o",
          "allow_other",
          "--cheap",
          "--dir-mode",
          "0755",
          "--file-mode",
          "0644",
          "--stat-cache-ttl",
          "30s",
          "datasets",
          MP,
        ],
      ],
    ];
    for (const [what, over, argv] of rows) {
      it(`[ok] ${what}`, () => {
        const cmd = buildMount("geesefs", request(over));
        expect(cmd.command).to.equal("/usr/local/bin/geesefs");
        expect(cmd.argv).to.deep.equal(argv);
      });
    }

    it("[ok] passes the keys as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and keeps the CA bundle", () => {
      const cmd = buildMount("geesefs", request(), { baseEnv: BASE_ENV });
      expect(cmd.env).to.deep.equal({
        PATH: DEFAULT_CLIENT_PATH,
        AWS_CA_BUNDLE: "/etc/ssl/certs/ca-certificates.crt",
        KUBERNETES_SERVICE_HOST: "10.0.0.1",
        AWS_ACCESS_KEY_ID: KEY_ID,
        AWS_SECRET_ACCESS_KEY: SECRET,
      });
    });
  });

  describe("programs and PATH", () => {
    for (const m of MOUNTERS) {
      it(`[ok] ${m}: run by absolute path, the configured one first; its PATH is the clients', never the agent's`, () => {
        expect(buildMount(m, request()).command).to.equal(DEFAULT_PROGRAMS[m]);
        expect(DEFAULT_PROGRAMS[m]).to.match(/^\//);
        const cmd = buildMount(m, request(), {
          baseEnv: BASE_ENV,
          program: `/opt/${m}/bin/${m}`,
          clientPath: "/usr/bin:/bin",
        });
        expect(cmd.command).to.equal(`/opt/${m}/bin/${m}`);
        expect(cmd.env.PATH).to.equal("/usr/bin:/bin");
        expect(buildMount(m, request(), { baseEnv: BASE_ENV }).env.PATH).to.equal(DEFAULT_CLIENT_PATH);
        expect(buildMount(m, request(), { baseEnv: { path: "/evil" } }).env).to.not.have.property("path");
      });

      it(`[error] ${m}: a program that is not an absolute path, or a client PATH with a relative directory`, () => {
        expectInvalid(() => buildMount(m, request(), { program: m }), /must be an absolute path/);
        expectInvalid(
          () => buildMount(m, request(), { clientPath: "/usr/bin:bin" }),
          /must list absolute directories only/,
        );
        expectInvalid(
          () => buildMount(m, request(), { clientPath: "/usr/bin::/bin" }),
          /absolute directories/,
        );
      });
    }
    it("[ok] the defaults name system directories only (no /usr/local on the clients' PATH)", () => {
      expect(DEFAULT_CLIENT_PATH.split(":")).to.deep.equal(["/usr/sbin", "/usr/bin", "/sbin", "/bin"]);
    });
  });

  describe("credentials never reach argv", () => {
    const variants: Array<Partial<MountRequest>> = [
      {},
      { prefix: "a/b", readOnly: true, uid: 1, gid: 1 },
      { options: {} },
    ];
    for (const mounter of MOUNTERS) {
      for (const [i, over] of variants.entries()) {
        it(`[ok] ${mounter} variant ${i + 1}: neither key appears in any argv element`, () => {
          const cmd: MountCommand = buildMount(mounter, request(over), { baseEnv: BASE_ENV });
          for (const arg of [cmd.command, ...cmd.argv]) {
            expect(arg).to.not.include(SECRET);
            expect(arg).to.not.include(KEY_ID);
            expect(arg).to.not.include(encodeURIComponent(SECRET));
          }
          // …and the secret is somewhere the client can read it.
          const carried = [...Object.values(cmd.env), ...cmd.files.map((f) => f.content)].join("\n");
          expect(carried).to.include(SECRET);
          for (const f of cmd.files) {
            expect(f.mode).to.equal(0o600);
            expect(f.path.startsWith(`${STATE}/`)).to.equal(true);
          }
        });
      }
    }
  });

  describe("user options", () => {
    const hostile: Array<[string, Record<string, string | true>, RegExp]> = [
      ["an option name with a dash and a space", { "-o allow_root": true }, /"-o allow_root" is not allowed/],
      ["allow_root", { allow_root: true }, /"allow_root" is not allowed/],
      ["a value with ..", { uid: "../x" }, /must not (start with "-"|contain "\.\.")/],
      ["a value with ,", { uid: "1,allow_root" }, /must not contain ',', '=' or whitespace/],
      ["a value with =", { uid: "x=y" }, /must not contain ',', '=' or whitespace/],
      ["a value with a leading -", { uid: "-1" }, /must not start with "-"/],
      ["a value with whitespace", { uid: "1 2" }, /must not contain ',', '=' or whitespace/],
      ["a non-numeric uid", { uid: "root" }, /must be a whole number/],
      ["an empty value", { uid: "" }, /is empty/],
      ["a switch given for a valued option", { uid: true }, /needs a value/],
      [
        "an own property named __proto__",
        JSON.parse('{"__proto__": "1"}') as Record<string, string>,
        /"__proto__" is not allowed/,
      ],
    ];
    for (const mounter of MOUNTERS) {
      for (const [what, options, pattern] of hostile) {
        it(`[error] ${mounter}: ${what}`, () => {
          expectInvalid(() => buildMount(mounter, request({ options })), pattern);
        });
      }
    }

    it("[error] the message names the option and lists the allowed ones", () => {
      expectInvalid(
        () => buildMount("rclone", request({ options: { "rc-addr": "0.0.0.0:5572" } })),
        /rclone option "rc-addr" is not allowed; allowed options: attr-timeout, buffer-size, .*vfs-write-back/,
      );
    });

    const perMounter: Array<[MounterName, Record<string, string | true>, RegExp]> = [
      ["rclone", { "vfs-cache-mode": "sometimes" }, /one of off, minimal, writes, full/],
      ["rclone", { "dir-cache-time": "5 minutes" }, /whitespace/],
      ["rclone", { "dir-cache-time": "5x" }, /a duration/],
      ["rclone", { "buffer-size": "16Q" }, /a size/],
      ["s3fs", { umask: "999" }, /octal/],
      ["s3fs", { enable_noobj_cache: "yes" }, /is a switch and takes no value/],
      ["s3fs", { parallel_count: "5000" }, /up to 1024/],
      ["s3fs", { use_cache: "/tmp" }, /"use_cache" is not allowed/],
      ["geesefs", { "list-type": "3" }, /one of 1, 2/],
      ["geesefs", { "part-sizes": "5:1000,25" }, /"part-sizes" is not allowed/],
      ["geesefs", { "sse-c": "a2V5" }, /"sse-c" is not allowed/],
    ];
    for (const [mounter, options, pattern] of perMounter) {
      it(`[error] ${mounter}: ${JSON.stringify(options)}`, () => {
        expectInvalid(() => buildMount(mounter, request({ options })), pattern);
      });
    }

    it("[ok] every mounter lists its allowed options", () => {
      for (const m of MOUNTERS) expect(MOUNTER_BUILDERS[m].allowedOptions).to.include("uid");
    });
  });

  describe("request validation", () => {
    const rows: Array<[string, Partial<MountRequest>, RegExp]> = [
      ["a bucket with ..", { bucket: "a..b" }, /not a valid bucket name/],
      ["a bucket starting with -", { bucket: "-o" }, /not a valid bucket name/],
      ["a prefix with ..", { prefix: "a/../b" }, /"\." or "\.\." segments/],
      ["a prefix starting with -", { prefix: "-x" }, /must not start with "-"/],
      ["a relative mount point", { mountPoint: "pods/x" }, /mount point .* must be absolute/],
      ["a mount point with ..", { mountPoint: "/var/lib/dynamic-volumes/pods/../../etc" }, /"\.\." segments/],
      ["a mount point with a comma", { mountPoint: "/mnt/a,allow_root" }, /may contain only/],
      ["a relative state dir", { stateDir: "agent/x" }, /state directory .* must be absolute/],
      ["a state dir with a comma", { stateDir: "/var/x,allow_root" }, /may contain only/],
      ["a state dir of /", { stateDir: "/" }, /must not be \//],
      [
        "an endpoint with credentials",
        { endpoint: "https://k:s@s3.example.com" },
        /must not contain credentials/,
      ],
      ["an endpoint with a comma", { endpoint: "https://s3.example.com,allow_root" }, /./],
      ["an ftp endpoint", { endpoint: "ftp://s3.example.com" }, /http:\/\/ or https:\/\//],
      ["not a URL", { endpoint: "s3.example.com" }, /not a URL/],
      ["a region with a comma", { region: "eu,x" }, /region/],
      [
        "an empty secret",
        { credentials: { accessKeyID: KEY_ID, secretAccessKey: "" } },
        /secretAccessKey is empty/,
      ],
      [
        "a secret with a newline",
        { credentials: { accessKeyID: KEY_ID, secretAccessKey: "a\nb" } },
        /control characters/,
      ],
      ["a negative uid", { uid: -1 }, /not a valid id/],
    ];
    for (const mounter of MOUNTERS) {
      for (const [what, over, pattern] of rows) {
        it(`[error] ${mounter}: ${what}`, () =>
          expectInvalid(() => buildMount(mounter, request(over)), pattern));
      }
    }

    it("[error] an unknown mounter", () => {
      expectInvalid(
        () => buildMount("goofys" as MounterName, request()),
        /unknown; use one of geesefs, s3fs, rclone/,
      );
      expectInvalid(() => mounterName("s3fs; rm"), /unknown/);
    });
  });

  describe("scrubSecrets", () => {
    const rows: Array<[string, string, string[], string]> = [
      ["removes the secret", `auth failed for ${SECRET}`, [SECRET], "auth failed for [REDACTED]"],
      ["removes every occurrence", "s s s", ["s"], "[REDACTED] [REDACTED] [REDACTED]"],
      ["removes the URL-encoded form", `x=${encodeURIComponent(SECRET)}`, [SECRET], "x=[REDACTED]"],
      ["removes a longer secret whole", "abcdef", ["abc", "abcdef"], "[REDACTED]"],
      ["ignores empty secrets", "text", ["", "zzz"], "text"],
      ["handles regex characters literally", "a.b+c a-b", ["a.b+c"], "[REDACTED] a-b"],
    ];
    for (const [what, text, secrets, want] of rows) {
      it(`[ok] ${what}`, () => expect(scrubSecrets(text, secrets)).to.equal(want));
    }
    it("[ok] secretsOf lists both keys", () => {
      expect(secretsOf({ accessKeyID: KEY_ID, secretAccessKey: SECRET })).to.have.members([KEY_ID, SECRET]);
    });
  });

  describe("withoutTimestamps", () => {
    // Lines as the clients print them (rclone 1.60, s3fs 1.90, GeeseFS), in failure messages as
    // agent/mount/fuse-mount.ts builds them.
    const rclone = (t: string): string =>
      `rclone could not mount bucket "data" on /x/pods/1/data: the client exited with code 1 before the mount was ready. Client output:\n${t} CRITICAL: Failed to create file system for "dv:data": didn't find section in config file\n${t} Fatal error: failed to mount FUSE fs: mountpoint does not exist: /x/agent/staging/pods.1.data`;
    const s3fs = (t: string): string =>
      `s3fs could not mount bucket "data" on /x/pods/1/data: the client exited with code 0 right after mounting. Client output:\n${t} [INF] s3fs.cpp:s3fs_init(3382): init v1.90(commit:unknown) with GnuTLS(gcrypt)\n${t} [CRT] s3fs.cpp:s3fs_check_service(3590): invalid credentials(host=http://127.0.0.1:4599) - result of checking service.`;
    const geesefs = (t: string): string =>
      `geesefs could not mount bucket "data" on /x/pods/1/data: the client exited with code 1 before the mount was ready. Client output:\n${t} main.FATAL Unable to mount file system, see syslog for details`;
    const rows: Array<[string, string, string, string]> = [
      ["rclone", rclone("2026/12/02 16:23:29 ERROR :"), rclone("2026/12/02 16:24:31 ERROR :"), "2026/12/02"],
      [
        "rclone --log-format microseconds",
        rclone("2026/12/02 16:23:29.104862"),
        rclone("2026/12/02 16:23:30.000001"),
        "16:23",
      ],
      ["s3fs", s3fs("2026-12-02T16:58:42.837Z"), s3fs("2026-12-02T17:01:02.001Z"), "2026-12-02T"],
      ["GeeseFS", geesefs("2026/12/02 16:23:29.104862"), geesefs("2026/12/03 00:00:00.000000"), "2026/12"],
    ];
    for (const [client, first, retry, stamp] of rows) {
      it(`[ok] ${client}: the same failure at another time compares equal, without its timestamps`, () => {
        expect(first).to.not.equal(retry);
        expect(withoutTimestamps(first)).to.equal(withoutTimestamps(retry));
        expect(withoutTimestamps(first)).to.not.include(stamp);
      });
    }
    it("[ok] a different failure still differs, and text without timestamps is left as it is", () => {
      expect(withoutTimestamps(rclone("2026/12/02 16:23:29"))).to.not.equal(
        withoutTimestamps(s3fs("2026/12/02 16:23:29")),
      );
      const plain = "/x/pods/1/data is a symbolic link; nothing is mounted (bucket 2026, 16:23 ms)";
      expect(withoutTimestamps(plain)).to.equal(plain);
      expect(withoutTimestamps("did not appear in mountinfo within 30000 ms")).to.equal(
        "did not appear in mountinfo within 30000 ms",
      );
    });
  });
});
