"""Panels: occupation vocabulary and crosswalks, CareerPanel, readers, the transition table and the Predictions contract."""
