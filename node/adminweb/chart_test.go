package adminweb

import (
	"testing"
	"time"
)

func TestRateChart(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	samples := []RateSample{
		{Time: t0, Messages: 10},
		{Time: t0.Add(time.Minute), Messages: 40},      // 30/min
		{Time: t0.Add(2 * time.Minute), Messages: 55},  // 15/min
		{Time: t0.Add(3 * time.Minute), Messages: 5},   // a counter reset (restart): 0
		{Time: t0.Add(3 * time.Minute), Messages: 500}, // no time passed: 0
	}
	c := rateChart("m", samples, func(s RateSample) float64 { return s.Messages })
	if len(c.Bars) != 4 || c.Max != "30.0" || c.Last != "0.0" || c.Span != "3m" {
		t.Fatalf("chart %+v", c)
	}
	if c.Bars[0].H != chartHeight-2 || c.Bars[1].H != (chartHeight-2)/2 || c.Bars[2].H != 0 {
		t.Errorf("bar heights %v %v %v", c.Bars[0].H, c.Bars[1].H, c.Bars[2].H)
	}
	for _, b := range c.Bars {
		if b.Y+b.H != chartHeight || b.X < 0 || b.X+b.W > chartWidth {
			t.Errorf("bar %+v outside the chart", b)
		}
	}
	if c := rateChart("m", samples[:1], func(s RateSample) float64 { return s.Messages }); len(c.Bars) != 0 || c.Span != "collecting" {
		t.Errorf("one sample: %+v", c)
	}
}

func TestHumanUnits(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{humanBytes(512), "512 B"},
		{humanBytes(35_533), "34.7 KiB"},
		{humanBytes(3 << 30), "3.0 GiB"},
		{humanSeconds(0.32), "320ms"},
		{humanSeconds(42), "42s"},
		{humanSeconds(3 * 3600), "3h00m"},
		{humanSeconds(5 * 86400), "5d"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
