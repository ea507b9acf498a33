package dns

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	mdns "github.com/miekg/dns"
)

func TestParseRecordType(t *testing.T) {
	tests := []struct {
		in      string
		want    RecordType
		wantErr bool
	}{
		{"", A, false},
		{"A", A, false},
		{"AAAA", AAAA, false},
		{"SRV", SRV, false},
		{"srv", "", true},
		{"MX", "", true},
	}
	for _, tt := range tests {
		got, err := ParseRecordType(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseRecordType(%q) = %q, %v; want %q, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrUnknownRecordType) {
			t.Errorf("ParseRecordType(%q) error %v does not wrap ErrUnknownRecordType", tt.in, err)
		}
	}
}

func TestServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("search example.com\nnameserver 192.0.2.1\nnameserver 2001:db8::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := resolvConf
	t.Cleanup(func() { resolvConf = old })
	tests := []struct {
		name       string
		servers    []string
		resolvConf string
		want       []string
	}{
		{"given, port defaults to 53", []string{"192.0.2.9", "192.0.2.9:5353", "2001:db8::9", "[2001:db8::9]:5353"}, conf,
			[]string{"192.0.2.9:53", "192.0.2.9:5353", "[2001:db8::9]:53", "[2001:db8::9]:5353"}},
		{"from resolv.conf", nil, conf, []string{"192.0.2.1:53", "[2001:db8::1]:53"}},
		{"no resolv.conf", nil, filepath.Join(dir, "missing"), []string{"127.0.0.1:53", "[::1]:53"}},
	}
	for _, tt := range tests {
		resolvConf = tt.resolvConf
		got := New(Options{Servers: tt.servers}).servers()
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: servers (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestDefaults(t *testing.T) {
	s := New(Options{})
	if s.Name() != "dns" {
		t.Errorf("Name() = %q, want dns", s.Name())
	}
	got := []time.Duration{s.opts.DefaultRefresh, s.opts.MinRefresh, s.opts.Timeout}
	want := []time.Duration{30 * time.Second, time.Second, 2 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults DefaultRefresh, MinRefresh, Timeout (-want +got):\n%s", diff)
	}
}

func TestErrorMessage(t *testing.T) {
	err := error(&Error{
		Service: "default/web", Name: "web.test.", Type: "AAAA",
		Servers: []ServerError{
			{Server: "192.0.2.1:53", Err: errors.New("i/o timeout")},
			{Server: "192.0.2.2:53", Err: &RcodeError{Rcode: mdns.RcodeServerFailure}},
			{Server: "192.0.2.3:53", Err: &RcodeError{Rcode: 99}},
		},
	})
	want := "dns source: service default/web: AAAA query for web.test. failed: server 192.0.2.1:53: i/o timeout; " +
		"server 192.0.2.2:53: answered SERVFAIL; server 192.0.2.3:53: answered RCODE99"
	if got := err.Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	var re *RcodeError
	if !errors.As(err, &re) || re.Rcode != mdns.RcodeServerFailure {
		t.Errorf("errors.As(%v, *RcodeError) = %v, want the SERVFAIL", err, re)
	}
}

func TestChaseStopsOnLoops(t *testing.T) {
	answer := rrs(t, "a.test. 1 IN CNAME b.test.", "b.test. 5 IN CNAME a.test.", "c.test. 1 IN CNAME c.test.")
	for _, name := range []string{"a.test.", "c.test."} {
		var ttl ttlMin
		_ = chase(answer, name, &ttl) // must return
		if !ttl.ok || ttl.ttl != 1 {
			t.Errorf("chase(%s) smallest TTL = %+v, want 1", name, ttl)
		}
	}
	var ttl ttlMin
	if got := chase(nil, "Web.Test", &ttl); got != "web.test." || ttl.ok {
		t.Errorf("chase with no answer = %q, ttl %+v; want web.test. and no TTL", got, ttl)
	}
}

func TestAddrOf(t *testing.T) {
	hdr := mdns.RR_Header{Name: "x.", Class: mdns.ClassINET}
	tests := []struct {
		rr   mdns.RR
		want string // "" means no address
	}{
		{&mdns.A{Hdr: hdr, A: []byte{10, 0, 0, 1}}, "10.0.0.1"},
		{rrs(t, "x. 1 IN A 10.0.0.2")[0], "10.0.0.2"}, // 16-byte IPv4
		{&mdns.A{Hdr: hdr}, ""},
		{&mdns.A{Hdr: hdr, A: []byte{1, 2, 3}}, ""},
		{&mdns.A{Hdr: hdr, A: []byte{0, 0, 0, 0}}, ""},
		{&mdns.A{Hdr: hdr, A: make([]byte, 16)}, ""}, // ::, not IPv4
		{&mdns.AAAA{Hdr: hdr, AAAA: []byte{10, 0, 0, 1}}, ""},
		{rrs(t, "x. 1 IN AAAA fd00::1")[0], "fd00::1"},
		{&mdns.AAAA{Hdr: hdr}, ""},
		{&mdns.RR_Header{Name: "x.", Rrtype: mdns.TypeA}, ""},
		{&mdns.TXT{Hdr: hdr, Txt: []string{"10.0.0.1"}}, ""},
	}
	for _, tt := range tests {
		a, ok := addrOf(tt.rr)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("addrOf(%v) = %q, want %q", tt.rr, got, tt.want)
		}
	}
}
