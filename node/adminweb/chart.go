package adminweb

import (
	"fmt"
	"time"
)

// Chart geometry, in SVG user units.
const (
	chartWidth  = 300.0
	chartHeight = 60.0
)

// chart is one small bar chart of a rate, drawn on the server as SVG
// (no script, no inline style: the bars are rects with a class).
type chart struct {
	Title string
	// Bars are the rates per minute of each interval, oldest first.
	Bars []bar
	// Last and Max are the newest and the highest rate, per minute.
	Last, Max string
	// Span is the time the chart covers.
	Span string
}

type bar struct {
	X, Y, W, H float64
	// Label is the bar's rate, for its tooltip.
	Label string
}

// charts draws the message and login rates of samples.
func charts(samples []RateSample) []chart {
	return []chart{
		rateChart("Messages accepted per minute", samples, func(s RateSample) float64 { return s.Messages }),
		rateChart("Logins per minute", samples, func(s RateSample) float64 { return s.Logins }),
		rateChart("Failed logins per minute", samples, func(s RateSample) float64 { return s.LoginFailures }),
	}
}

func rateChart(title string, samples []RateSample, value func(RateSample) float64) chart {
	c := chart{Title: title, Last: "0", Max: "0"}
	if len(samples) < 2 {
		c.Span = "collecting"
		return c
	}
	rates := make([]float64, 0, len(samples)-1)
	peak := 0.0
	for i := 1; i < len(samples); i++ {
		dt := samples[i].Time.Sub(samples[i-1].Time).Minutes()
		dv := value(samples[i]) - value(samples[i-1])
		r := 0.0
		if dt > 0 && dv > 0 { // a counter reset reads as 0
			r = dv / dt
		}
		rates = append(rates, r)
		peak = max(peak, r)
	}
	w := chartWidth / float64(len(rates))
	for i, r := range rates {
		h := 0.0
		if peak > 0 {
			h = r / peak * (chartHeight - 2)
		}
		c.Bars = append(c.Bars, bar{X: float64(i) * w, Y: chartHeight - h, W: max(w-1, 0.5), H: h, Label: fmt.Sprintf("%.1f/min", r)})
	}
	c.Last, c.Max = fmt.Sprintf("%.1f", rates[len(rates)-1]), fmt.Sprintf("%.1f", peak)
	c.Span = humanDuration(samples[len(samples)-1].Time.Sub(samples[0].Time).Round(time.Second))
	return c
}
