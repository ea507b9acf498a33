package greeter

import (
	"context"
	"errors"
	"strings"
)

// ErrEmptyName is returned by Greet when the name is empty or blank.
var ErrEmptyName = errors.New("name must not be empty")

// Service greets people.
type Service interface {
	// Greet returns "Hello, NAME" and the instance that answered.
	Greet(ctx context.Context, name string) (Greeting, error)
}

// Greeting is the answer of Greet.
type Greeting struct {
	Message  string `json:"message"`
	Instance string `json:"instance"`
}

type service struct {
	instance string
}

// NewService returns a Service whose greetings name instance.
func NewService(instance string) Service {
	return service{instance: instance}
}

// Greet implements Service.
func (s service) Greet(_ context.Context, name string) (Greeting, error) {
	if strings.TrimSpace(name) == "" {
		return Greeting{}, ErrEmptyName
	}
	return Greeting{Message: "Hello, " + name, Instance: s.instance}, nil
}

var _ Service = service{}
