import { expect } from "chai";
import { diagnose } from "../../../../agent/mount/diagnose.js";

/** What the clients printed against a local S3 server (s3fs 1.90, rclone 1.60). */
const OUTPUT = {
  s3fsNoBucket:
    "2026-12-02T19:55:47.045Z [CRT] s3fs.cpp:s3fs_check_service(3593): bucket or key not found(host=http://127.0.0.1:39953) - result of checking service.",
  s3fsBadKey:
    "2026-12-02T19:55:47.850Z [CRT] s3fs.cpp:s3fs_check_service(3590): invalid credentials(host=http://127.0.0.1:39953) - result of checking service.",
  rcloneBadKey:
    "2026/12/02 19:55:48 ERROR : IO error: InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.\n\tstatus code: 403, request id: , host id: ",
  rcloneNoBucket:
    "ERROR : : error reading source root directory: NoSuchBucket: The specified bucket does not exist",
  rcloneRefused:
    'Failed to create file system: RequestError: send request failed\ncaused by: Put "http://127.0.0.1:1/alpha": dial tcp 127.0.0.1:1: connect: connection refused',
  s3fsUnresolved:
    "[ERR] curl.cpp:RequestPerform(2463): ### CURLE_COULDNT_RESOLVE_HOST: Could not resolve host: s3.invalid",
};

describe("diagnose", () => {
  const at = "http://127.0.0.1:39953";

  it("names a missing bucket and says to check or create it", () => {
    for (const out of [OUTPUT.s3fsNoBucket, OUTPUT.rcloneNoBucket]) {
      const d = diagnose(out, "nosuch", at);
      expect(d?.cause).to.equal(`bucket "nosuch" was not found at ${at}`);
      expect(d?.fix).to.match(/create the bucket/);
    }
  });

  it("names refused credentials and points at the Secret", () => {
    for (const out of [OUTPUT.s3fsBadKey, OUTPUT.rcloneBadKey]) {
      const d = diagnose(out, "alpha", at);
      expect(d?.cause).to.equal(`${at} refused the credentials for bucket "alpha"`);
      expect(d?.fix).to.match(/accessKeyID and secretAccessKey in the Secret/);
    }
  });

  it("names an endpoint the node cannot reach", () => {
    for (const out of [OUTPUT.rcloneRefused, OUTPUT.s3fsUnresolved])
      expect(diagnose(out, "alpha", "http://s3.invalid")?.cause).to.equal(
        "http://s3.invalid could not be reached from the node",
      );
  });

  it("says nothing it does not know", () => {
    expect(diagnose("", "alpha", at)).to.equal(undefined);
    expect(diagnose("fuse: device not found, try 'modprobe fuse' first", "alpha", at)).to.equal(undefined);
  });
});
