package greeter

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

func TestServeTCPEcho(t *testing.T) {
	for _, banner := range []string{"", "220 g1 ready\r\n"} {
		t.Run("banner="+banner, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- ServeTCPEcho(ctx, lis, banner) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("ServeTCPEcho: %v", err)
				}
			}()
			c, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			if banner != "" {
				if got, err := br.ReadString('\n'); err != nil || got != banner {
					t.Fatalf("got banner %q, %v; want %q before the client writes", got, err, banner)
				}
			}
			io.WriteString(c, "hello\n")
			c.(*net.TCPConn).CloseWrite()
			if got, err := io.ReadAll(br); err != nil || string(got) != "hello\n" {
				t.Errorf("got echo %q, %v; want %q", got, err, "hello\n")
			}
		})
	}
}
