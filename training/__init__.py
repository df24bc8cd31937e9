"""Training pipeline for the Moodlens emotion classifier (FER-2013)."""
