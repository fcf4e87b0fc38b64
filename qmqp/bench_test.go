package qmqp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// benchBody is a 2 KB message, LF only, like qmqp-source -l 2048.
var benchBody = func() string {
	b := []byte("From: <a@example.com>\nTo: <b@example.org>\nSubject: bench\n\n" +
		strings.Repeat(strings.Repeat("X", 71)+"\n", 28))[:2048]
	b[len(b)-1] = '\n'
	return string(b)
}()

// runClients sends n messages from clients concurrent goroutines, each on a
// new connection, with send doing one message.
func runClients(b *testing.B, clients int, send func() error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan struct{}, b.N)
	for i := 0; i < b.N; i++ {
		next <- struct{}{}
	}
	close(next)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := send(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkServer measures the server over loopback with a handler that
// accepts without storing: raw QMQP requests of 2 KB, one message per
// connection, from 1 and 10 concurrent clients.
func BenchmarkServer(b *testing.B) {
	for _, clients := range []int{1, 10} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := &Server{
				Handler:  HandlerFunc(func(context.Context, *Request) mail.Status { return mail.OK("") }),
				Allow:    loopback,
				ErrorLog: slog.New(slog.DiscardHandler),
			}
			addr := startServer(b, s)
			req := request(benchBody, "a@example.com", "b@example.org")
			b.SetBytes(int64(len(req)))
			runClients(b, clients, func() error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer c.Close()
				if _, err := c.Write(req); err != nil {
					return err
				}
				reply, err := io.ReadAll(c)
				if err != nil || string(reply) != "3:Kok," {
					return fmt.Errorf("reply %q, %v", reply, err)
				}
				return nil
			})
		})
	}
}

// BenchmarkClientServer is the same load through Client.Send: our client
// against our server.
func BenchmarkClientServer(b *testing.B) {
	for _, clients := range []int{1, 10} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := &Server{
				Handler: HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
					io.Copy(io.Discard, req.Body)
					if _, err := req.Envelope(); err != nil {
						return mail.StatusOf(err)
					}
					return mail.OK("")
				}),
				Allow:    loopback,
				ErrorLog: slog.New(slog.DiscardHandler),
			}
			addr := startServer(b, s)
			c := &Client{Servers: []string{addr}}
			env := mail.Envelope{Sender: "a@example.com", Recipients: []string{"b@example.org"}}
			b.SetBytes(int64(len(benchBody)))
			runClients(b, clients, func() error {
				res, err := c.Send(context.Background(), env, strings.NewReader(benchBody), int64(len(benchBody)))
				if err != nil || !res.Status.IsAccept() {
					return fmt.Errorf("%+v, %v", res, err)
				}
				return nil
			})
		})
	}
}

func TestBenchBodySize(t *testing.T) {
	if len(benchBody) != 2048 || !strings.HasSuffix(benchBody, "\n") {
		t.Fatalf("bench body of %d bytes", len(benchBody))
	}
}

// BenchmarkQmqpSource drives the server with Postfix's qmqp-source: 10
// parallel sessions, 2 KB messages, one per connection, a handler that reads
// everything and accepts.
func BenchmarkQmqpSource(b *testing.B) {
	source := testpeer.Need(b, "qmqp-source")
	s := &Server{
		Handler: HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
			io.Copy(io.Discard, req.Body)
			if _, err := req.Envelope(); err != nil {
				return mail.StatusOf(err)
			}
			return mail.OK("")
		}),
		Allow:    loopback,
		ErrorLog: slog.New(slog.DiscardHandler),
	}
	addr := startServer(b, s)
	b.ResetTimer()
	start := time.Now()
	out, err := exec.Command(source, "-s", "10", "-m", strconv.Itoa(b.N), "-l", "2048", addr).CombinedOutput()
	if err != nil {
		b.Fatalf("qmqp-source: %v\n%s", err, out)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
