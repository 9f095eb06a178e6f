/**
 * The programs the node side runs, by absolute path. Nothing is looked up through `PATH`: a
 * directory early on the agent's `PATH` (`/usr/local/sbin` in the image) that someone managed to
 * write into, or to mount a bucket on, would otherwise choose the program that runs as root.
 * Pure: the paths are configuration (`agent/config.ts`), these are its defaults.
 */
import type { MounterName } from "../../../shared/names.js";

/** Absolute paths of the FUSE clients and of the mount tools. */
export interface ProgramPaths extends Readonly<Record<MounterName, string>> {
  /** util-linux `mount`: the root's shared bind at start-up, and moving a client's mount into place. */
  readonly mount: string;
  /** util-linux `umount`. */
  readonly umount: string;
  /** libfuse's `fusermount3`, which unmounts FUSE mounts without following a symbolic link. */
  readonly fusermount3: string;
}

/**
 * Where Debian's packages put them (`s3fs`, `rclone`, `fuse3`, `util-linux`; `/bin` is `/usr/bin`
 * on a merged-/usr system), and where `Dockerfile.agent` installs GeeseFS.
 */
export const DEFAULT_PROGRAMS: ProgramPaths = Object.freeze({
  s3fs: "/usr/bin/s3fs",
  rclone: "/usr/bin/rclone",
  geesefs: "/usr/local/bin/geesefs",
  mount: "/usr/bin/mount",
  umount: "/usr/bin/umount",
  fusermount3: "/usr/bin/fusermount3",
});

/**
 * The `PATH` a FUSE client gets, whatever the agent's own: clients look up their helpers themselves
 * (rclone runs `fusermount`, libfuse 2 falls back to it), so it names system directories only.
 */
export const DEFAULT_CLIENT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
