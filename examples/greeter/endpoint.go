package greeter

import (
	"context"
	"fmt"

	"github.com/go-kit/kit/endpoint"
)

// GreetRequest is the request of the Greet endpoint.
type GreetRequest struct {
	Name string `json:"name"`
}

// GreetResponse is the response of the Greet endpoint.
type GreetResponse struct {
	Message  string `json:"message"`
	Instance string `json:"instance"`
}

// Endpoints collects the service's Go kit endpoints; the transports serve
// them.
type Endpoints struct {
	Greet endpoint.Endpoint
}

// MakeEndpoints returns the endpoints of svc.
func MakeEndpoints(svc Service) Endpoints {
	return Endpoints{Greet: makeGreetEndpoint(svc)}
}

func makeGreetEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req, ok := request.(GreetRequest)
		if !ok {
			return nil, fmt.Errorf("greet endpoint: unexpected request type %T", request)
		}
		g, err := svc.Greet(ctx, req.Name)
		if err != nil {
			return nil, err
		}
		return GreetResponse(g), nil
	}
}

// endpointService is a Service that calls a Greet endpoint; the Go kit
// clients return one wrapped around their transport's client endpoint.
type endpointService struct {
	greet endpoint.Endpoint
}

// Greet implements Service.
func (s endpointService) Greet(ctx context.Context, name string) (Greeting, error) {
	resp, err := s.greet(ctx, GreetRequest{Name: name})
	if err != nil {
		return Greeting{}, err
	}
	r, ok := resp.(GreetResponse)
	if !ok {
		return Greeting{}, fmt.Errorf("greet: unexpected response type %T", resp)
	}
	return Greeting(r), nil
}

var _ Service = endpointService{}
