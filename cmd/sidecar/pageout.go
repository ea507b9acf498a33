package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Most of an idle sidecar's RSS is not its data but its own executable:
// starting up runs the init code of some 240 packages and registers the
// descriptors of every protobuf type it links, and the kernel maps each
// touched page of the file with its neighbours (fault-around), so about
// 14.6 of 18 MiB idle RSS were file pages of the binary that nothing
// reads again (measured with /proc/self/status RssFile, CGO_ENABLED=0,
// stripped). Once the sidecar is ready it tells the kernel those pages
// are cold (madvise MADV_PAGEOUT on its read-only file mappings): clean
// file pages, dropped without any write, and read again from the page
// cache or the disk if some rare path needs them. Pages another process
// maps too (another sidecar of the same image on the node) are only
// unmapped from this one (MADV_DONTNEED; the mapping is private and
// read-only, so nothing is lost) and stay in the page cache for the
// other. What the sidecar really uses (its hot code, heap and stacks)
// comes back at once: 6 MiB idle, and the code of the request path under
// load.

// rssFile returns the process's file-backed resident memory in bytes.
func rssFile() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("RssFile %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no RssFile in /proc/self/status")
}

// startupAdvice is what the pages the start-up touched get: reclaimed,
// unmapped, and faulted back one at a time.
var startupAdvice = []int{unix.MADV_PAGEOUT, unix.MADV_DONTNEED, unix.MADV_RANDOM}

// trimAdvice is what the periodic trim gives them: unmapped only, so the
// hot ones come back from the page cache at once (a minor fault each)
// and nothing is evicted from it.
var trimAdvice = []int{unix.MADV_DONTNEED}

// pageOutBinary advises the kernel to reclaim the resident pages of the
// executable's read-only mappings and returns how many mappings it
// advised. Kernels before 5.4 have no MADV_PAGEOUT (EINVAL).
func pageOutBinary() (int, error) { return adviseBinary(startupAdvice) }

// adviseBinary gives advice to the executable's read-only mappings.
func adviseBinary(advice []int) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, ok := exeMapping(sc.Text(), exe)
		if !ok {
			continue
		}
		// Raw madvise: the range is the kernel's, not a Go slice. PAGEOUT
		// reclaims the pages only this process maps; DONTNEED then
		// unmaps the rest from it (pages another sidecar of the same
		// image maps stay in the page cache for it; the read-only
		// private mapping reads them again from there if needed);
		// RANDOM makes a page the code needs again come back alone, not
		// with the 15 around it (fault-around): under load the file pages
		// grew back to 12 MiB without it, 7.5 with it.
		for _, advice := range advice {
			if _, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, uintptr(advice)); e != 0 {
				return n, fmt.Errorf("madvise(%d): %w", advice, e)
			}
		}
		n++
	}
	return n, sc.Err()
}

// exeMapping parses a /proc/self/maps line ("start-end perms offset dev
// inode path") and reports the range when it maps exe without write
// permission.
func exeMapping(line, exe string) (start, end uintptr, ok bool) {
	fields := strings.Fields(line)
	if len(fields) < 6 || strings.Join(fields[5:], " ") != exe || strings.Contains(fields[1], "w") {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(fields[0], "-")
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(lo, 16, 64)
	e, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}

// releaseStartupPages pages the executable out and logs what it gave
// back; a kernel without MADV_PAGEOUT costs nothing but a debug line.
func releaseStartupPages(logger *slog.Logger) {
	before, _ := rssFile() //nolint:errcheck // 0 in the log line
	if _, err := pageOutBinary(); err != nil {
		logger.Debug("startup pages not handed back", "err", err)
		return
	}
	after, _ := rssFile() //nolint:errcheck // 0 in the log line
	logger.Info("startup pages of the executable handed back to the kernel", "rss_file_before", before, "rss_file_after", after)
}

// trimmer is what the periodic trim asks to let go of what it holds
// without use: *proxy.Proxy (idle upstream connections past their time).
type trimmer interface{ Trim() int }

// trimLoop hands back, every interval, what the sidecar holds without
// using it, so that its RSS is what it runs now, not the high-water mark
// of every path it ever ran:
//   - its executable's pages (the TLS handshakes of an hour ago, a
//     protocol it no longer carries, the xDS decoding of the last push):
//     unmapped, they stay in the page cache, and those it runs come back
//     with a minor fault each (MADV_RANDOM: alone, without their
//     neighbours), about 2,000 under load, a millisecond or two per
//     interval;
//   - upstream connections idle past the pool's timeout, to endpoints
//     nothing is sent to any more;
//   - the heap's free pages (debug.FreeOSMemory: one more GC per
//     interval, where under load there are many a second).
func trimLoop(ctx context.Context, interval time.Duration, px trimmer, logger *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	exe := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if exe {
				if _, err := adviseBinary(trimAdvice); err != nil {
					logger.Debug("executable pages not trimmed", "err", err)
					exe = false
				}
			}
			if n := px.Trim(); n > 0 {
				logger.Debug("idle upstream connections closed", "connections", n)
			}
			debug.FreeOSMemory()
		}
	}
}
