package node

import (
	"strings"
	"testing"
	"time"
)

func TestOutboundConfig(t *testing.T) {
	cfg, err := Parse("test.toml", []byte(`
[outbound]
port = 2626
expire = "48h"
delay_notice = "2h"
retry_base = "30s"
domain_connections = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	want := OutboundConfig{Port: 2626, Expire: 48 * time.Hour, DelayNotice: 2 * time.Hour, RetryBase: 30 * time.Second, DomainConnections: 2}
	if cfg.Outbound != want {
		t.Fatalf("outbound %+v, want %+v", cfg.Outbound, want)
	}
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Outbound.Port = 70000 }, "outbound.port"},
		{func(c *Config) { c.Outbound.Expire = -time.Hour }, "outbound.expire"},
		{func(c *Config) { c.Outbound.RetryBase = -time.Second }, "outbound.retry_base"},
		{func(c *Config) { c.Outbound.DomainConnections = 500 }, "outbound.domain_connections"},
	} {
		c := Default()
		c.DataDir = "/tmp/x"
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error mentioning %q", err, tc.want)
		}
	}
}
