package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestSidecarSlowReader: a 1 GiB HTTP/2 download to a client that first
// stops reading and then reads at its own pace passes whole through two
// sidecars (the client's outbound, the greeter's inbound), while neither
// sidecar's Go heap grows by 16 MiB: flow control holds the greeter back,
// nothing is buffered without bound. (The sidecars carry the race
// detector here, whose shadow memory swamps RSS: the heap they report is
// what the relay holds.)
func TestSidecarSlowReader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 1)
	g := m.greeters[0]
	pods := []*pod{m.client, g}
	heap := func(p *pod) float64 {
		return metricSum(sidecarMetrics(ctx, t, p), "go_memstats_heap_inuse_bytes")
	}
	base, peak := map[*pod]float64{}, map[*pod]float64{}
	for _, p := range pods {
		base[p] = heap(p)
	}
	sample := func() {
		for _, p := range pods {
			peak[p] = max(peak[p], heap(p))
		}
	}

	const size = 1 << 30
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/bytes/%d", greeterVIP, size), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := m.client.httpClient(true)
	c.Timeout = 0 // ctx bounds it: a gigabyte through race-built sidecars takes a while
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("got %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
	}
	// The client reads nothing for two seconds: the greeter must stop.
	tick := time.NewTicker(250 * time.Millisecond)
	for range 8 {
		<-tick.C
		sample()
	}
	tick.Stop()
	// Then it reads at its own pace, pausing every 32 MiB, and checks
	// every byte against the greeter's pattern (byte i is i mod 251).
	pattern := make([]byte, 64<<10+251)
	for i := range pattern {
		pattern[i] = byte(i % 251)
	}
	buf := make([]byte, 64<<10)
	var got int64
	start := time.Now()
	for {
		n, err := resp.Body.Read(buf)
		if at := got % 251; !bytes.Equal(buf[:n], pattern[at:at+int64(n)]) {
			t.Fatalf("bytes %d..%d differ from what the greeter sent", got, got+int64(n))
		}
		if (got+int64(n))/(32<<20) != got/(32<<20) {
			sample()
			time.Sleep(20 * time.Millisecond) // the slow reader's pause
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	if got != size {
		t.Fatalf("got %d bytes, want %d", got, size)
	}
	t.Logf("1 GiB in %v after a 2 s stop", time.Since(start).Round(time.Millisecond))
	for _, p := range pods {
		grew := peak[p] - base[p]
		t.Logf("%s's sidecar: heap in use %.1f MiB at the start, %.1f MiB at most", p.name, base[p]/(1<<20), peak[p]/(1<<20))
		if grew >= 16<<20 {
			t.Errorf("%s's sidecar heap grew by %.1f MiB during the download, want < 16 MiB", p.name, grew/(1<<20))
		}
	}
}
