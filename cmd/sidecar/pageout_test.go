package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestExeMapping(t *testing.T) {
	const exe = "/sidecar"
	for _, tt := range []struct {
		line   string
		ok     bool
		lo, hi uintptr
	}{
		{"00400000-00ad2000 r-xp 00000000 fe:00 9977917 /sidecar", true, 0x400000, 0xad2000},
		{"00ad2000-013aa000 r--p 006d2000 fe:00 9977917 /sidecar", true, 0xad2000, 0x13aa000},
		{"013aa000-01430000 rw-p 00faa000 fe:00 9977917 /sidecar", false, 0, 0}, // data: written
		{"7f5a8ad14000-7f5a8ae6a000 r-xp 00026000 fe:00 326269 /usr/lib/libc.so.6", false, 0, 0},
		{"189129400000-189129c00000 rw-p 00000000 00:00 0", false, 0, 0},
		{"zz-01430000 r--p 00faa000 fe:00 9977917 /sidecar", false, 0, 0},
		{"01430000-00400000 r--p 00faa000 fe:00 9977917 /sidecar", false, 0, 0},
		{"", false, 0, 0},
	} {
		lo, hi, ok := exeMapping(tt.line, exe)
		if ok != tt.ok || lo != tt.lo || hi != tt.hi {
			t.Errorf("exeMapping(%q) = %#x, %#x, %v; want %#x, %#x, %v", tt.line, lo, hi, ok, tt.lo, tt.hi, tt.ok)
		}
	}
}

// TestPageOutBinary: the test binary's own file pages shrink once
// advised, and it keeps running (its code comes back as it runs).
func TestPageOutBinary(t *testing.T) {
	before, err := rssFile()
	if err != nil {
		t.Skip("no /proc/self/status RssFile:", err)
	}
	n, err := pageOutBinary()
	if err != nil {
		t.Skip("no MADV_PAGEOUT on this kernel:", err)
	}
	after, err := rssFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d mappings of %s advised; RssFile %d → %d KiB", n, os.Args[0], before>>10, after>>10)
	if n == 0 {
		t.Fatalf("got no mapping of the executable, want its text and read-only data")
	}
	if after >= before {
		t.Errorf("got RssFile %d KiB after the advice, want less than the %d KiB before", after>>10, before>>10)
	}
}

// TestTrimBinary: the periodic trim unmaps the executable's pages again
// after code ran (as a sidecar's paths bring theirs back), asks the proxy
// to trim, and stops with its context.
func TestTrimBinary(t *testing.T) {
	if _, err := rssFile(); err != nil {
		t.Skip("no /proc/self/status RssFile:", err)
	}
	// Touch much of the test binary's code and data, as a long-running
	// sidecar does over time.
	var sb strings.Builder
	for range 200 {
		fmt.Fprintf(&sb, "%v %x %q", time.Now(), sha256.Sum256([]byte(sb.String())), regexp.MustCompile(`a+b*`).FindString("aab"))
	}
	before, err := rssFile()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var trims atomic.Int64
	go func() {
		trimLoop(ctx, 20*time.Millisecond, trimFunc(func() int { trims.Add(1); return 0 }), slog.New(slog.DiscardHandler))
		close(done)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("trimBinary did not stop with its context")
	}
	after, err := rssFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RssFile %d → %d KiB", before>>10, after>>10)
	if after >= before {
		t.Errorf("got RssFile %d KiB after trimming, want less than the %d KiB before", after>>10, before>>10)
	}
	if trims.Load() == 0 {
		t.Error("the proxy was never asked to trim")
	}
}

type trimFunc func() int

func (f trimFunc) Trim() int { return f() }
