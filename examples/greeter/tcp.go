package greeter

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// ServeTCPEcho echoes every connection on lis until ctx is done. A
// non-empty banner is written first, before the client says anything, as
// SMTP and MySQL servers do; it is how tests check that a sidecar does not
// stall server-speaks-first protocols.
func ServeTCPEcho(ctx context.Context, lis net.Listener, banner string) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { lis.Close() })
	defer stop()
	for {
		c, err := lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Go(func() {
			defer c.Close()
			closeOnDone := context.AfterFunc(ctx, func() { c.Close() })
			defer closeOnDone()
			if banner != "" {
				if _, err := io.WriteString(c, banner); err != nil {
					return
				}
			}
			io.Copy(c, c) //nolint:errcheck // the peer closing ends the echo
		})
	}
}
