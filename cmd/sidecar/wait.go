package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"time"
)

// runWait blocks until the sidecar at --admin-addr is ready: the postStart
// hook of a classic (non-native) injected sidecar, so the app containers
// start once the mesh works.
func runWait(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sidecar wait", flag.ContinueOnError)
	addr := fs.String("admin-addr", "127.0.0.1:15000", "the sidecar's admin address")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := &http.Client{Timeout: time.Second}
	url := "http://" + *addr + "/ready"
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sidecar not ready after %s (%s: %s)", *timeout, url, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
