package capture

import (
	"context"
	"sync"
	"time"
)

// CachedID holds a source's register URI (Identity.ID), read from the
// server once: by Run when it connects (Set), or by ID itself before that.
type CachedID struct {
	mu sync.Mutex
	id string
}

// Set stores the URI.
func (c *CachedID) Set(id string) {
	c.mu.Lock()
	c.id = id
	c.mu.Unlock()
}

// Get returns the URI, reading it with read (given 10 seconds) if it is
// not known yet; "" if the server cannot be reached, which is logged.
func (c *CachedID) Get(log Logger, source string, read func(ctx context.Context) (string, error)) string {
	c.mu.Lock()
	id := c.id
	c.mu.Unlock()
	if id != "" {
		return id
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := read(ctx)
	if err != nil {
		log.Warn("cannot read the server's identity", "source", source, "error", err)
		return ""
	}
	c.Set(id)
	return id
}
