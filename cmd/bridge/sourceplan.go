package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/source"
)

// sourcePlan is what the source needs beyond the configuration, resolved
// and validated before anything starts.
type sourcePlan struct {
	agents      []string
	presenceMap map[string]string
	call        source.CallForm
	scope       source.QuotaScope
	// entitlement warns when the plan exceeds the daily request
	// entitlement; "" when it fits.
	entitlement string
}

// planSource reads the agent list and the presence overrides and checks the
// polling plan against Dataverse's service-protection limits.
func planSource(cfg config.Config) (sourcePlan, error) {
	var p sourcePlan
	var err error
	p.agents = cfg.AgentIDs
	if cfg.AgentIDsFile != "" {
		p.agents, err = source.LoadAgentFile(cfg.AgentIDsFile)
		var le *source.AgentListError
		if err != nil && (!errors.As(err, &le) || le.Invalid()) {
			return p, fmt.Errorf("BRIDGE_AGENT_IDS_FILE: %w", err)
		}
		if len(p.agents) == 0 {
			return p, fmt.Errorf("BRIDGE_AGENT_IDS_FILE: %s lists no agent", cfg.AgentIDsFile)
		}
	}
	if cfg.PresenceMap != "" {
		if p.presenceMap, err = source.ParsePresenceMap(cfg.PresenceMap); err != nil {
			return p, fmt.Errorf("BRIDGE_PRESENCE_MAP: %w", err)
		}
	}
	if p.call, err = source.ParseCallForm(cfg.PresenceCall); err != nil {
		return p, fmt.Errorf("BRIDGE_PRESENCE_CALL: %w", err)
	}
	if p.scope, err = source.ParseQuotaScope(cfg.QuotaScope); err != nil {
		return p, fmt.Errorf("BRIDGE_QUOTA_SCOPE: %w", err)
	}
	limits := source.LimitsConfig{
		Agents: len(p.agents), Interval: cfg.PollInterval, MaxRPS: cfg.MaxRPS, MaxConcurrency: cfg.MaxConcurrency, Scope: p.scope,
	}
	if err := source.CheckLimits(limits); err != nil {
		return p, fmt.Errorf("BRIDGE_POLL_INTERVAL, BRIDGE_MAX_RPS, BRIDGE_QUOTA_SCOPE: %w", err)
	}
	p.entitlement = source.EntitlementWarning(limits)
	return p, nil
}

// tokenProvider picks the static token, the token file, or Entra ID.
func tokenProvider(cfg config.Config, m *source.Metrics, log *slog.Logger) (source.TokenProvider, error) {
	switch {
	case cfg.Token != "":
		return source.StaticToken(cfg.Token), nil
	case cfg.TokenFile != "":
		t, err := source.NewFileToken(source.FileTokenOptions{Path: cfg.TokenFile})
		if err != nil {
			return nil, fmt.Errorf("BRIDGE_TOKEN_FILE: %w", err)
		}
		return t, nil
	default:
		t, err := source.NewEntraToken(source.EntraTokenOptions{OrgURL: cfg.OrgURL, Metrics: m, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("entra id credential: %w", err)
		}
		return t, nil
	}
}
