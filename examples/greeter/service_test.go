package greeter

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestServiceGreet(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Greeting
		wantErr error
	}{
		{name: "name", in: "World", want: Greeting{Message: "Hello, World", Instance: "g1"}},
		{name: "name with spaces", in: "Ada Lovelace", want: Greeting{Message: "Hello, Ada Lovelace", Instance: "g1"}},
		{name: "unicode", in: "世界", want: Greeting{Message: "Hello, 世界", Instance: "g1"}},
		{name: "empty", in: "", wantErr: ErrEmptyName},
		{name: "blank", in: " \t", wantErr: ErrEmptyName},
	}
	svc := NewService("g1")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := svc.Greet(context.Background(), tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Greet(%q) error: got %v, want %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Greet(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestGreetEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		req     any
		want    any
		wantErr bool
	}{
		{name: "ok", req: GreetRequest{Name: "Bob"}, want: GreetResponse{Message: "Hello, Bob", Instance: "g2"}},
		{name: "empty name", req: GreetRequest{}, wantErr: true},
		{name: "wrong request type", req: "Bob", wantErr: true},
	}
	e := MakeEndpoints(NewService("g2"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Greet(context.Background(), tt.req)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Greet endpoint error: got %v, want error %t", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Greet endpoint (-want +got):\n%s", diff)
			}
		})
	}
}
