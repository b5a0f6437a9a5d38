/** coordinator/: receives statistics, sums, solves and writes the merged model. Public entry. */
export {};
